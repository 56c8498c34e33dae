"""Where instance files live. :class:`InstanceStorage` is the interface (an object store could implement
it later); :class:`FilesystemStorage` keeps the objects exactly as received (Part 10 file: preamble,
file meta, dataset bytes) under ``<data_dir>/dicom/``.

Layout: ``<root>/<aa>/<sha1(study uid)>/<sha1(instance uid)>.dcm`` — 256 top-level shards, one folder
per study (so a study's instances sit together and a new folder, with its extra directory fsyncs, is
created once per study rather than per instance), and names derived from validated UIDs by hashing, so
nothing a peer sends ever becomes a path component.

Durability: a new object is written under its final name; its data and its folder entry are fsynced side
by side (two flushes in flight at once, which the filesystem journal usually merges into one commit,
instead of one after the other); a replacement is written aside and fsynced, and renamed over the old copy (then its folder
fsynced) only once the caller's index commit succeeded (``prepare`` / ``publish``), so the old copy stays
whole until the new one is, and stays when the commit fails. The caller answers Success only after this and the index
commit; a file whose size differs from the index (a crash mid-write) is rewritten by the next resend.

Crash window of a replacement: the index row is committed before the prepared copy is renamed over the old
one, so a crash between the two leaves the index describing the new object while the file is still the old
copy (its size usually differs, so the SCU's resend, which it makes because it never got Success, heals it;
a same-size old copy is served until then), and leaves the written-aside ``.<name>.<random>.tmp`` behind.
Such leftovers are removed by :meth:`FilesystemStorage.sweep_temp_files` when the PACS starts (one
``os.scandir`` pass over the folders, reading no file's metadata but the temp files'). Writes of one key
are serialised from ``prepare`` to ``publish``/``discard``; a failed ``publish`` removes its temp file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

from engine.aligned import ALIGN, BUFFERS, CHUNK, is_aligned

__all__ = ["InstanceStorage", "KeyLocks", "PreparedPut", "FilesystemStorage", "storage_key"]

log = logging.getLogger(__name__)


def storage_key(study_instance_uid: str, sop_instance_uid: str) -> str:
    """Relative key of an instance; callers pass UIDs already checked by uids.require_uid."""
    study = hashlib.sha1(study_instance_uid.encode()).hexdigest()
    instance = hashlib.sha1(sop_instance_uid.encode()).hexdigest()
    return f"{study[:2]}/{study}/{instance}.dcm"


class InstanceStorage(Protocol):
    def put(self, key: str, data: bytes | memoryview) -> int:
        """Durably store ``data`` under ``key`` (replacing it); return the number of bytes."""
        ...

    def prepare(
        self, key: str, data: bytes | memoryview, on_writing: Callable[[], None] | None = None
    ) -> PreparedPut:
        """``put`` in two steps: ``data`` is durable when this returns, but a stored copy under ``key``
        is replaced only by ``PreparedPut.publish()`` (``discard()`` leaves it as it was), so a caller
        can decide after its own commit whether the replacement stands. ``on_writing``, when given, is
        called once, on this thread, when what is left is waiting for the disk: the caller starts work
        to run beside the write there. An implementation may not call it (nor when it fails first)."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """Bytes stored under ``key``, None when absent."""
        ...

    def delete(self, key: str) -> None: ...

    def path(self, key: str) -> Path | None:
        """A local file path when the storage has one (lets readers memory-map), else None."""
        ...


class FilesystemStorage:
    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = Path(root)
        self._direct = direct_io and _O_DIRECT != 0
        self.root.mkdir(parents=True, exist_ok=True)
        self._dir_sync = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pacs-dirsync")
        self._keys = KeyLocks()
        #: study folders being created and flushed, by the thread that found them missing first
        self._making: dict[Path, _FolderMaking] = {}
        self._making_lock = threading.Lock()

    def _resolve(self, key: str) -> Path:
        parts = key.split("/")
        # keys come from storage_key(); refuse anything else rather than trust it
        if len(parts) != 3 or any(not p or p in (".", "..") or "\\" in p for p in parts):
            raise ValueError("invalid storage key")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes | memoryview) -> int:
        self.prepare(key, data).publish()
        return len(data)

    def prepare(
        self, key: str, data: bytes | memoryview, on_writing: Callable[[], None] | None = None
    ) -> PreparedPut:
        final = self._resolve(key)
        # one prepared write per key at a time, from prepare until publish/discard: a second write of the
        # same instance waits, so the index and the file cannot end up describing different copies
        self._keys.acquire(key)
        try:
            target = self._write(final, data, _Once(on_writing))
        except BaseException:
            self._keys.release(key)
            raise
        return _PreparedFile(target, final, self._keys, key)

    def _make_folder(self, folder: Path) -> None:
        """Create a study folder (and its shard folder) and flush their entries; a thread that needs
        one another thread is making waits for that instead."""
        with self._making_lock:
            making = self._making.get(folder)
            mine = making is None
            if mine:
                making = self._making[folder] = _FolderMaking()
        assert making is not None
        if not mine:
            making.wait()
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # new shard folders are directory entries too: make them durable before the file inside
            _fsync_dir(folder.parent)
            _fsync_dir(self.root)
        except BaseException as exc:
            making.error = exc
            raise
        finally:
            with self._making_lock:
                del self._making[folder]
            making.done.set()

    def _write(self, final: Path, data: bytes | memoryview, on_writing: _Once) -> Path:
        folder = final.parent
        # a new object is written under its final name: nothing refers to it before the caller's index
        # commit, a crash leaves at most a short file that a resend rewrites, and one flush (file, then
        # its folder entry) is saved compared with write-aside-and-rename. Created with O_EXCL rather
        # than after checking: the common case costs one system call instead of three
        try:
            fd = _create(final)
        except FileNotFoundError:
            self._make_folder(folder)
            fd = _create(final)
        else:
            # the folder may be one another thread has just made and is still flushing: this file must
            # not be reported durable before the folder's own entries are
            making = self._making.get(folder)
            if making is not None:
                making.wait()
        if fd is not None:
            target = final
        else:
            # replacing a stored copy: write aside under a name no other writer can hold, and rename, so
            # the old copy stays whole until then
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder)
            os.fchmod(fd, 0o640)
            target = Path(name)
        # a new name is already in its folder: flush that entry while the data is written and flushed
        # (the caller waits for both; until then nothing refers to the file)
        entry = self._dir_sync.submit(_fsync_dir, folder) if target == final else None
        try:
            self._write_data(fd, data, on_writing)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)
            if entry is not None:
                entry.exception()  # let the flush finish before the caller moves on
            raise
        os.close(fd)
        if entry is not None:
            entry.result()  # the new name must survive a power cut, not just the bytes
        return target

    def _write_data(self, fd: int, data: bytes | memoryview, on_writing: _Once) -> None:
        view = memoryview(data).cast("B")
        offset = 0
        if self._direct and len(view) >= ALIGN:  # a smaller object has no whole block to write direct
            try:
                offset = _write_direct(fd, view, on_writing)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # this filesystem (or its block size) does not take direct writes: buffered from now on
                self._direct = False
                log.warning(
                    "direct I/O refused under %s (%s): instance files are written through the page cache",
                    self.root,
                    exc.strerror,
                )
                os.ftruncate(fd, 0)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        # the tail that is not a whole block (or everything, without direct I/O): an ordinary write, so
        # the file needs no padding cut off afterwards (which would read its last block back from disk)
        on_writing()
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)

    def sweep_temp_files(self, older_than: float = 60.0) -> int:
        """Remove replacement copies (``.*.tmp``) left by a crash, if older than ``older_than`` seconds (a
        younger one may belong to a write in flight); returns how many were removed."""
        cutoff = time.time() - older_than
        removed = 0
        for shard in _subdirs(self.root):
            for study in _subdirs(shard):
                with os.scandir(study) as entries:
                    for entry in entries:
                        name = entry.name
                        if name[0] == "." and name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                            try:
                                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                    os.unlink(entry.path)
                                    removed += 1
                            except FileNotFoundError:
                                pass
        return removed

    def size(self, key: str) -> int | None:
        try:
            return self._resolve(key).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, key: str) -> BinaryIO:
        return open(self._resolve(key), "rb")

    def exists(self, key: str) -> bool:
        return self._resolve(key).exists()

    def delete(self, key: str) -> None:
        self._resolve(key).unlink(missing_ok=True)

    def path(self, key: str) -> Path | None:
        return self._resolve(key)


class _FolderMaking:
    """A folder one thread is creating and flushing; others wait until its entries are durable."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise OSError(errno.EIO, "the instance folder could not be made durable") from self.error


class _Once:
    """Calls ``action`` (if any) the first time it is called, never again."""

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None] | None) -> None:
        self.action = action

    def __call__(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


class PreparedPut(Protocol):
    def publish(self) -> None:
        """Put the prepared copy in place of a stored one (nothing to do for a new object)."""
        ...

    def discard(self) -> None:
        """Drop a copy prepared to replace a stored one, which stays as it was (a new object's file
        stays: never indexed, so never served, and a resend rewrites it)."""
        ...


class _PreparedFile:
    __slots__ = ("target", "final", "_locks", "_key")

    def __init__(self, target: Path, final: Path, locks: KeyLocks, key: str) -> None:
        self.target, self.final = target, final
        self._locks: KeyLocks = locks
        self._key: str | None = key

    def publish(self) -> None:
        if self._key is None:
            raise RuntimeError("prepared copy already published or discarded")
        try:
            if self.target != self.final:
                try:
                    os.replace(self.target, self.final)
                except BaseException:
                    self.target.unlink(missing_ok=True)  # a failed publish leaves no temp file behind
                    raise
                _fsync_dir(self.final.parent)
        finally:
            self._done()

    def discard(self) -> None:
        if self._key is None:
            return
        try:
            if self.target != self.final:
                self.target.unlink(missing_ok=True)
        finally:
            self._done()

    def _done(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._locks.release(key)


class KeyLocks:
    """A lock per key: per storage key from ``prepare`` until ``publish``/``discard`` (which may run on
    another thread, hence a plain Lock, not an RLock), per SOP Instance UID for a whole C-STORE
    (StoreService); an entry is dropped once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[str, list] = {}  # key -> [lock, holders + waiters]

    def acquire(self, key: str) -> None:
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = [threading.Lock(), 0]
            slot[1] += 1
        try:
            slot[0].acquire()
        except BaseException:
            self._forget(key, slot)
            raise

    def release(self, key: str) -> None:
        with self._guard:
            slot = self._slots[key]
        slot[0].release()
        self._forget(key, slot)

    def _forget(self, key: str, slot: list) -> None:
        with self._guard:
            slot[1] -= 1
            if slot[1] == 0:
                del self._slots[key]


# Direct I/O (O_DIRECT): the object goes from page-aligned memory straight to the device instead of being
# copied into the page cache first. On a VM whose freed memory goes back to the host (virtio-balloon free
# page reporting) that copy lands on pages the host must map again, and cost ~1.5 ms of CPU per 0.5 MB
# object against ~0.2 ms direct; a server that writes what it receives and rarely reads it back soon after
# gains nothing from caching it anyway (an auto-forward reads the new file back from disk). Only whole
# blocks go direct; the last partial block is an ordinary write. Linux only (os.O_DIRECT); a filesystem
# that refuses it (EINVAL) is written through the page cache.
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def _write_direct(fd: int, data: memoryview, on_writing: Callable[[], None]) -> int:
    """Write the whole blocks at the start of ``data`` to ``fd`` (from offset 0) with O_DIRECT, leaving
    it set on ``fd``; returns how many bytes were written (a multiple of the block size, which may be
    less than asked when the device writes short). ``data`` that is itself aligned (received into a
    pooled buffer) is written as it is; anything else is copied into a pooled buffer chunk by chunk.
    ``on_writing`` is called right before the first write."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
    blocks = len(data) & ~(ALIGN - 1)
    if is_aligned(data):
        on_writing()
        return _write_blocks(fd, data[:blocks], 0)
    buffer = BUFFERS.take()
    offset = 0
    try:
        with memoryview(buffer) as aligned:
            while offset < blocks:
                size = min(CHUNK, blocks - offset)
                aligned[:size] = data[offset : offset + size]
                on_writing()
                done = _write_blocks(fd, aligned[:size], offset)
                if done < size:
                    return offset + done
                offset += size
    finally:
        BUFFERS.give(buffer)
    return offset


def _write_blocks(fd: int, blocks: memoryview, offset: int) -> int:
    """pwrite ``blocks`` at ``offset``; how many bytes went out, fewer when a write came back short off a
    block boundary (the caller writes on from there without direct I/O)."""
    done = 0
    with blocks:
        while done < len(blocks):
            written = os.pwrite(fd, blocks[done:], offset + done)
            if written <= 0 or written % ALIGN:
                return done + max(written, 0)
            done += written
    return done


def _create(path: Path) -> int | None:
    """A new file at ``path`` open for writing, or None when something is there already;
    FileNotFoundError when its folder is missing."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:
        return None


def _subdirs(folder: Path | str) -> list[str]:
    with os.scandir(folder) as entries:
        return [e.path for e in entries if e.is_dir(follow_symlinks=False)]


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
