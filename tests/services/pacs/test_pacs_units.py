"""UIDs, storage keys and the file store, group commit: no database needed."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.aligned import BUFFERS, CHUNK, is_aligned
from engine.errors import InvalidInput
from services.pacs import storage as storage_module
from services.pacs.group_commit import GroupCommitter
from services.pacs.storage import FilesystemStorage, storage_key
from services.pacs.uids import is_valid_uid, require_uid


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2", "2.25.123456789", "0.1", "1"])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    ["", "1..2", "1.02", ".1", "1.", "1.2.a", "../../etc/passwd", "1/2", "1." + "2" * 63, "1 2", "1.2\n"],
)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidInput):
        require_uid(uid, "SOPInstanceUID")


def test_trailing_nul_padding_is_allowed() -> None:
    assert require_uid("1.2.3\x00", "SOPInstanceUID") == "1.2.3"


def test_storage_keys_are_hashes_and_paths_stay_inside(tmp_path: Path) -> None:
    key = storage_key("1.2.3", "1.2.3.4")
    assert key.count("/") == 2 and key.endswith(".dcm")
    assert "1.2.3" not in key
    assert storage_key("1.2.3", "1.2.3.5").rsplit("/", 1)[0] == key.rsplit("/", 1)[0]  # one folder per study
    storage = FilesystemStorage(tmp_path / "dicom")
    assert storage.put(key, b"DICM" * 10) == 40
    with storage.open(key) as fh:
        assert fh.read() == b"DICM" * 10
    assert storage.exists(key)
    assert not list((tmp_path / "dicom").rglob("*.tmp"))  # the temp file was renamed away
    for bad in ("../x/y.dcm", "a/../../b.dcm", "a/b", "/etc/passwd/x"):
        with pytest.raises(ValueError):
            storage.put(bad, b"x")
    storage.delete(key)
    assert not storage.exists(key)


def test_a_prepared_replacement_leaves_the_stored_copy_until_it_is_published(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    fresh = storage.prepare(key, b"first")
    assert storage.size(key) == 5  # a new object is written under its final name
    fresh.publish()
    replacing = storage.prepare(key, b"second copy")
    with storage.open(key) as fh:
        assert fh.read() == b"first"  # written aside until published
    replacing.discard()
    assert [p.name for p in (tmp_path / "dicom").rglob("*") if p.is_file()] == [key.rsplit("/", 1)[1]]
    storage.prepare(key, b"second copy").publish()
    with storage.open(key) as fh:
        assert fh.read() == b"second copy"
    assert not list((tmp_path / "dicom").rglob("*.tmp"))


def test_group_commit_batches_concurrent_callers_and_isolates_failures() -> None:
    batches: list[list[int]] = []

    def commit(items: list[int]) -> list[int]:
        batches.append(list(items))
        time.sleep(0.02)
        if 13 in items:
            raise RuntimeError("bad item")
        return [i * 10 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(commit)
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            results[i] = committer.submit(i)
        except RuntimeError as exc:
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results[13], RuntimeError)
    assert {i: r for i, r in results.items() if i != 13} == {i: i * 10 for i in range(20) if i != 13}
    assert any(len(b) > 1 for b in batches)  # callers shared commits


def test_two_replacements_of_one_instance_in_flight_do_not_share_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # regression: the temp name was .{name}.{pid}.{thread id}.tmp and the pacs-io pool reuses threads, so
    # a second prepare overwrote the first one's copy and its publish then found no file
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    storage.put(key, b"old")
    first = storage.prepare(key, b"AAAA")
    second: list = []
    waiting = threading.Thread(target=lambda: second.append(storage.prepare(key, b"BB")))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not second  # serialised per key until the first is published
    first.publish()
    with storage.open(key) as fh:
        assert fh.read() == b"AAAA"
    waiting.join(5)
    assert not waiting.is_alive()
    second[0].publish()
    with storage.open(key) as fh:
        assert fh.read() == b"BB"
    assert not list((tmp_path / "dicom").rglob("*.tmp"))
    # the lock is released in every path: discard, a failed publish, and other keys are not held up
    other = storage_key("1.2.3", "1.2.3.5")
    held = storage.prepare(key, b"C")
    storage.put(other, b"other")  # another key is not blocked
    held.discard()
    broken = storage.prepare(key, b"D")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("services.pacs.storage.os.replace", failing_replace)
        with pytest.raises(OSError):
            broken.publish()
    assert not list((tmp_path / "dicom").rglob("*.tmp"))  # a failed publish drops its temp file
    storage.prepare(key, b"E").publish()  # not blocked by the failed publish
    with storage.open(key) as fh:
        assert fh.read() == b"E"
    assert not list((tmp_path / "dicom").rglob("*.tmp"))
    assert not storage._keys._slots


def test_replacement_temp_names_are_unique_in_one_thread(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    storage.put(key, b"old")
    names = set()
    for _ in range(3):
        prepared = storage.prepare(key, b"new")
        names.add(prepared.target.name)
        prepared.discard()
    assert len(names) == 3


def test_temp_files_left_by_a_crash_are_swept_when_older_than_a_minute(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    storage.put(key, b"stored")
    folder = (tmp_path / "dicom" / key).parent
    old, young = folder / ".x.dcm.abc.tmp", folder / ".y.dcm.def.tmp"
    old.write_bytes(b"left by a crash")
    young.write_bytes(b"a write in flight")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert storage.sweep_temp_files() == 1
    assert not old.exists() and young.exists()
    with storage.open(key) as fh:
        assert fh.read() == b"stored"  # stored objects are never touched
    assert FilesystemStorage(tmp_path / "empty").sweep_temp_files() == 0


def _direct_io_supported(folder: Path) -> bool:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = folder / "direct-probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | flag, 0o600))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct", "buffered"])
@pytest.mark.parametrize(
    "size",
    [1, 4095, 4096, 4097, CHUNK - 1, CHUNK, 2 * CHUNK + 123],
)
def test_objects_of_any_size_read_back_exactly(tmp_path: Path, direct_io: bool, size: int) -> None:
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=direct_io)
    key = storage_key("1.2.3", "1.2.3.4")
    data = os.urandom(size)
    storage.put(key, data)
    assert storage.size(key) == size  # the padding of the last direct write is cut off
    replacement = os.urandom(size // 2 + 1)
    storage.prepare(key, memoryview(replacement)).publish()  # written aside, then renamed over
    with storage.open(key) as fh:
        assert fh.read() == replacement


def test_files_are_written_with_direct_io_where_the_filesystem_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_io_supported(tmp_path):
        pytest.skip("no O_DIRECT on this platform or filesystem")
    writes: list[tuple[bool, int]] = []  # (direct, length)
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        import fcntl

        writes.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), len(data)))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    FilesystemStorage(tmp_path / "dicom").put(storage_key("1.2.3", "1.2.3.4"), b"x" * 10_000)
    assert writes == [(True, 8192), (False, 1808)]  # whole blocks direct, the partial last one not
    writes.clear()
    FilesystemStorage(tmp_path / "buffered", direct_io=False).put(storage_key("1.2", "1.2.5"), b"y" * 9000)
    assert writes == [(False, 9000)]


def test_a_filesystem_that_refuses_direct_io_is_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not _direct_io_supported(tmp_path):
        pytest.skip("no O_DIRECT on this platform or filesystem")
    import fcntl

    real_pwrite = os.pwrite
    refused = 0

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        nonlocal refused
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused += 1
            with open(f"/proc/self/fd/{fd}", "r+b") as other:  # what a failed attempt may leave
                other.write(b"half-written garbage from the refused attempt")
            raise OSError(errno.EINVAL, "Invalid argument")  # as from a device with larger blocks
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=True)
    first, second = storage_key("1.2.3", "1.2.3.4"), storage_key("1.2.3", "1.2.3.5")
    data = os.urandom(3 * 4096 + 5)
    storage.put(first, data)
    storage.put(second, data[:9000])
    with storage.open(first) as fh:
        assert fh.read() == data  # the attempt's bytes are gone and O_DIRECT was cleared for the rest
    assert storage.size(second) == 9000
    assert refused == 1  # refused once, then not tried again
    assert "direct I/O refused" in caplog.text


def test_a_direct_write_cut_short_off_a_block_boundary_is_finished_normally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_io_supported(tmp_path):
        pytest.skip("no O_DIRECT on this platform or filesystem")
    import fcntl

    real_pwrite = os.pwrite
    shortened: list[int] = []

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        if direct and not shortened:
            shortened.append(4096)  # short, but on a block boundary: the direct writes go on
            return real_pwrite(fd, memoryview(data)[:4096], offset)
        if direct and len(shortened) == 1:
            shortened.append(100)  # short and off a block boundary (written through another descriptor,
            with open(f"/proc/self/fd/{fd}", "r+b") as other:  # as a direct write of 100 bytes fails)
                other.seek(offset)
                other.write(memoryview(data)[:100])
            return 100
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=True)
    key = storage_key("1.2.3", "1.2.3.4")
    data = os.urandom(5 * 4096 + 77)
    storage.put(key, data)
    with storage.open(key) as fh:
        assert fh.read() == data
    assert shortened == [4096, 100]
    assert storage._direct  # a short write is no refusal


def test_a_failed_direct_write_fails_the_store_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes | memoryview, on_writing: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_module, "_write_direct", full)
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=True)
    key = storage_key("1.2.3", "1.2.3.4")
    with pytest.raises(OSError):
        storage.put(key, b"DICM" * 2048)  # whole blocks: written direct
    assert not storage.exists(key)


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct", "buffered"])
def test_on_writing_is_called_once_before_the_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    events: list[str] = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        events.append("write")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=direct_io)
    data = os.urandom(2 * CHUNK + 4097)  # several direct chunks and a tail
    storage.prepare(storage_key("1.2.3", "1.2.3.4"), data, lambda: events.append("on_writing")).publish()
    assert events[0] == "on_writing" and events.count("on_writing") == 1 and "write" in events
    with storage.open(storage_key("1.2.3", "1.2.3.4")) as fh:
        assert fh.read() == data


def test_an_object_smaller_than_a_block_is_written_without_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(fd: int, data: bytes | memoryview, on_writing: Any) -> int:
        raise AssertionError("no whole block to write direct")

    monkeypatch.setattr(storage_module, "_write_direct", never)
    storage = FilesystemStorage(tmp_path / "dicom", direct_io=True)
    storage.put(storage_key("1.2.3", "1.2.3.4"), b"x" * 4095)
    assert storage.size(storage_key("1.2.3", "1.2.3.4")) == 4095


def test_a_study_folder_made_by_another_thread_meanwhile_is_still_flushed_before_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two associations storing the first instances of one study: the one whose create found no folder
    while the other was making it must not answer before the folder's entries are durable."""
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    final = tmp_path / "dicom" / key
    final.parent.mkdir(parents=True)  # made by the other thread, its flushes maybe still under way
    flushed: list[Path] = []
    real_create, real_fsync_dir = storage_module._create, storage_module._fsync_dir
    calls = 0

    def create(path: Path) -> int | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise FileNotFoundError(path)  # what this thread saw before the other made the folder
        return real_create(path)

    def fsync_dir(folder: Path) -> None:
        flushed.append(Path(folder))
        real_fsync_dir(folder)

    monkeypatch.setattr(storage_module, "_create", create)
    monkeypatch.setattr(storage_module, "_fsync_dir", fsync_dir)
    storage.put(key, b"DICM")
    assert final.parent.parent in flushed and tmp_path / "dicom" in flushed
    assert final.read_bytes() == b"DICM"
    assert not list(final.parent.glob(".*.tmp"))  # written under its name, not as a replacement


def test_a_file_in_a_folder_still_being_flushed_waits_for_those_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread A makes a new study folder and is flushing its entries; thread B's file lands in that
    folder meanwhile (its create succeeds): B must not report its file durable before A's flushes end."""
    storage = FilesystemStorage(tmp_path / "dicom")
    held, release = threading.Event(), threading.Event()
    real_fsync_dir = storage_module._fsync_dir

    def fsync_dir(folder: Path) -> None:
        if threading.current_thread().name == "maker" and not held.is_set():
            held.set()
            assert release.wait(10)
        real_fsync_dir(folder)

    monkeypatch.setattr(storage_module, "_fsync_dir", fsync_dir)
    maker = threading.Thread(target=storage.put, args=(storage_key("1.2.3", "1.2.3.4"), b"A"), name="maker")
    maker.start()
    assert held.wait(10)  # the folder exists, its entries are being flushed
    second: list[int] = []
    other = threading.Thread(
        target=lambda: second.append(storage.put(storage_key("1.2.3", "1.2.3.5"), b"BB"))
    )
    other.start()
    try:
        other.join(0.3)
        assert other.is_alive() and not second  # waits for the maker's flushes
    finally:
        release.set()
    maker.join(10)
    other.join(10)
    assert second == [2]


def test_an_aligned_object_is_written_direct_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DICOM adapter receives a data set into a pooled aligned buffer: the storage writes from it."""
    if not _direct_io_supported(tmp_path):
        pytest.skip("no O_DIRECT on this platform or filesystem")
    buffer = BUFFERS.take()
    data = os.urandom(3 * 4096 + 100)
    buffer[: len(data)] = data
    taken: list[int] = []
    real_take = BUFFERS.take
    monkeypatch.setattr(BUFFERS, "take", lambda *args: taken.append(1) or real_take(*args))
    storage = FilesystemStorage(tmp_path / "dicom")
    key = storage_key("1.2.3", "1.2.3.4")
    with memoryview(buffer) as view, view[: len(data)] as received:
        assert is_aligned(received)
        storage.put(key, received)
    assert taken == []  # written from the received buffer itself
    with storage.open(key) as fh:
        assert fh.read() == data
    storage.put(storage_key("1.2.3", "1.2.3.5"), data)  # bytes: copied into a pooled buffer first
    assert taken == [1]
    BUFFERS.give(buffer)
