"""The ``dicom://`` destination for channels: ``dicom://AE@host:port`` or ``dicom://AE`` (a remote from
CONDUIT_DICOM_REMOTES). The payload is a Part 10 object; the peer's C-STORE status decides the result."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from adapters.dicom.remotes import RemoteAE, parse_remotes
from adapters.dicom.scu import store_to
from adapters.dicom.settings import DicomSettings
from engine.errors import ConfigurationError
from engine.messaging.ports import SendResult

__all__ = ["DicomDestination", "resolve_destination"]


def resolve_destination(url: str, settings: DicomSettings) -> RemoteAE:
    parts = urlsplit(url)
    if parts.scheme.lower() != "dicom":
        raise ConfigurationError(f"{url}: not a dicom:// URL")
    if parts.port is not None:
        return next(iter(parse_remotes(f"{parts.username}@{parts.hostname}:{parts.port}").values()))
    name = parts.netloc
    remote = settings.remote_table.get(name)
    if remote is None:
        raise ConfigurationError(f"{url}: {name!r} is not in CONDUIT_DICOM_REMOTES")
    return remote


class DicomDestination:
    def __init__(self, url: str, settings: DicomSettings) -> None:
        self.settings = settings
        self.remote = resolve_destination(url, settings)

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        [result] = await asyncio.to_thread(store_to, self.settings, self.remote, [payload])
        if result.ok:
            return SendResult(True, f"C-STORE 0x{result.status:04X}")
        if result.status is None:
            return SendResult(
                False, result.detail or "not sent", retryable=result.detail != "unreadable object"
            )
        # 0xA7xx (out of resources) may clear up; other failures will not
        return SendResult(False, f"C-STORE 0x{result.status:04X}", retryable=result.status >> 8 == 0xA7)

    async def close(self) -> None:
        return None
