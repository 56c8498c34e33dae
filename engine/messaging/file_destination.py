"""The ``file://`` destination: each payload becomes one new file in a folder, written atomically.

File names come from the clock and a random UUID, never from message content, so nothing a sender writes
in MSH-10 can steer a path. The file is written under a temporary name, fsynced, then renamed, so a reader
polling the folder never sees half a message.

Options: ``extension`` (letters/digits, default ``hl7`` for HL7 v2, ``json`` for FHIR),
``prefix`` (letters, digits, ``-``/``_``).
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine.errors import ConfigurationError
from engine.messaging.ports import SendResult

__all__ = ["FileDestination", "create_file_destination"]

_SAFE = re.compile(r"^[A-Za-z0-9_-]{0,40}$")


class FileDestination:
    def __init__(self, folder: Path, *, extension: str | None = None, prefix: str = "") -> None:
        self.folder = folder
        self.extension = extension
        self.prefix = prefix

    def _write(self, payload: bytes, content_type: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        ext = self.extension or ("json" if "json" in content_type else "hl7")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.folder / f"{self.prefix}{stamp}-{uuid.uuid4().hex}.{ext}"
        tmp = final.with_name("." + final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)
        return final

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        try:
            path = await asyncio.to_thread(self._write, payload, content_type)
        except OSError as exc:
            return SendResult(False, f"cannot write to {self.folder}: {exc.strerror or exc}", retryable=True)
        return SendResult(True, f"written {path.name}")

    async def close(self) -> None:
        return None


def create_file_destination(url: str, options: dict[str, object]) -> FileDestination:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"{url}: file destinations write on this machine (file:///folder)")
    folder = Path(unquote(parts.path))
    if not folder.is_absolute():
        raise ConfigurationError(f"{url}: the folder must be absolute (file:///path/to/folder)")
    extension = options.get("extension")
    prefix = str(options.get("prefix", ""))
    if extension is not None and not (
        isinstance(extension, str) and re.fullmatch(r"[A-Za-z0-9]{1,10}", extension)
    ):
        raise ConfigurationError(f"{url}: extension must be 1-10 letters or digits")
    if not _SAFE.match(prefix):
        raise ConfigurationError(f"{url}: prefix may hold only letters, digits, '-' and '_'")
    return FileDestination(folder, extension=extension, prefix=prefix)
