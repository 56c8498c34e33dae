"""Where instance files live. :class:`InstanceStorage` is the interface (an object store could implement
it later); :class:`FilesystemStorage` keeps the objects exactly as received (Part 10 file: preamble,
file meta, dataset bytes) under ``<data_dir>/dicom/``.

Layout: ``<root>/<aa>/<sha1(study uid)>/<sha1(instance uid)>.dcm`` — 256 top-level shards, one folder
per study (so a study's instances sit together and a new folder, with its extra directory fsyncs, is
created once per study rather than per instance), and names derived from validated UIDs by hashing, so
nothing a peer sends ever becomes a path component.

Durability: a new object is written under its final name; its data, then its folder entry are fsynced
(on ext4 and XFS the second flush finds the entry already committed with the file's inode); a
replacement is written aside, fsynced, renamed over the old copy and then its folder fsynced, in that
order, so the old copy stays whole until the new one is. The caller answers Success only after this and
the index commit; a file whose size differs from the index (a crash mid-write) is rewritten by the next resend.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, cast

__all__ = ["InstanceStorage", "PendingPut", "FilesystemStorage", "storage_key"]


def storage_key(study_instance_uid: str, sop_instance_uid: str) -> str:
    """Relative key of an instance; callers pass UIDs already checked by uids.require_uid."""
    study = hashlib.sha1(study_instance_uid.encode()).hexdigest()
    instance = hashlib.sha1(sop_instance_uid.encode()).hexdigest()
    return f"{study[:2]}/{study}/{instance}.dcm"


class InstanceStorage(Protocol):
    def put(self, key: str, data: bytes | memoryview) -> int:
        """Durably store ``data`` under ``key`` (replacing it); return the number of bytes."""
        ...

    def start_put(self, key: str, data: bytes | memoryview) -> PendingPut:
        """``put`` in two steps: hand ``data`` over now (its flush to the device may start), be durable
        at ``PendingPut.finish()``, so the caller can do other work (the index commit) in between."""
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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        # keys come from storage_key(); refuse anything else rather than trust it
        if len(parts) != 3 or any(not p or p in (".", "..") or "\\" in p for p in parts):
            raise ValueError("invalid storage key")
        return os.path.join(self._root, *parts)

    def _resolve(self, key: str) -> Path:
        return Path(self._path(key))

    def put(self, key: str, data: bytes | memoryview) -> int:
        self.start_put(key, data).finish()
        return len(data)

    def start_put(self, key: str, data: bytes | memoryview) -> PendingPut:
        final = self._path(key)
        folder = os.path.dirname(final)
        target = final
        try:
            # a new object is written under its final name: nothing refers to it before the caller's
            # index commit, a crash leaves at most a short file that a resend rewrites, and one flush
            # (file, then its folder entry) is saved compared with write-aside-and-rename. O_EXCL tells a
            # new name from a stored copy in the same call (no separate stat of folder and file).
            fd = os.open(final, _CREATE_NEW, 0o640)
        except FileNotFoundError:
            self._make_folder(folder)
            fd = os.open(final, _CREATE_NEW, 0o640)
        except FileExistsError:
            # replacing a stored copy: write aside and rename, so the old copy stays whole until then
            name = f".{os.path.basename(final)}.{os.getpid()}.{threading.get_ident():x}.tmp"
            target = os.path.join(folder, name)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        pending = _PendingFile(fd, target, final)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BaseException:
            pending.abandon()
            raise
        _start_writeback(fd)
        return pending

    def _make_folder(self, folder: str) -> None:
        """Create a study folder (and its shard folder); new folders are directory entries too, so they
        are made durable, bottom up, before any file inside is acknowledged."""
        os.makedirs(folder, exist_ok=True)
        _fsync_dir(os.path.dirname(folder))
        _fsync_dir(self._root)

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


class PendingPut(Protocol):
    def finish(self) -> None:
        """Make the object durable under its key (OSError when it cannot be)."""
        ...

    def abandon(self) -> None:
        """Give up without making anything durable: a copy written aside is removed, a new file under
        its final name may stay (never indexed, so never served; a resend rewrites it)."""
        ...


class _PendingFile:
    """A file written but not yet flushed: ``finish`` fsyncs it, renames it over a stored copy when it
    was written aside, then fsyncs its folder (the new name must survive a power cut, not just the bytes;
    after the file's own flush ext4 and XFS find the entry already committed with its inode, so that
    second flush is nearly free: 0.85 -> 0.93 ms for both, measured)."""

    __slots__ = ("fd", "target", "final")

    def __init__(self, fd: int, target: str, final: str) -> None:
        self.fd, self.target, self.final = fd, target, final

    def finish(self) -> None:
        try:
            os.fsync(self.fd)
        except BaseException:
            self.abandon()
            raise
        os.close(self.fd)
        self.fd = -1
        if self.target != self.final:
            try:
                os.replace(self.target, self.final)
            except BaseException:
                self.abandon()
                raise
        _fsync_dir(os.path.dirname(self.final))

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.target != self.final:
            with contextlib.suppress(OSError):
                os.unlink(self.target)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE = _sync_file_range()
#: sync_file_range(2): start writing the dirty pages back, do not wait
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Start sending a written file's pages to the device (Linux), so that its fsync, issued once the
    caller has committed the index, finds most of the data already written. Only a head start: it makes
    nothing durable and its failure is ignored (fsync reports any error)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


#: a new file, failing when the name exists (the caller then writes aside)
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _fsync_dir(folder: str | Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
