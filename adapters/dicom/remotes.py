"""Remote AEs (``AE@host:port``) and calling-AE allow-list entries (``AE`` or ``AE@host``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RemoteAE", "AllowedPeer", "parse_remotes", "parse_allowed", "valid_ae_title"]

# PS3.5 Table 6.2-1 AE: 1-16 characters of the default repertoire, no backslash or control characters
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def valid_ae_title(title: str) -> bool:
    return bool(_AE.match(title)) and bool(title.strip())


@dataclass(frozen=True)
class RemoteAE:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class AllowedPeer:
    ae_title: str
    host: str | None = None

    def admits(self, calling_ae: str, address: str) -> bool:
        return calling_ae.strip() == self.ae_title and (self.host is None or self.host == address)


def _split(value: str | list[str]) -> list[str]:
    items = value if isinstance(value, list) else value.split(",")
    return [i.strip() for i in items if i and i.strip()]


def parse_remotes(value: str | list[str]) -> dict[str, RemoteAE]:
    """``"PACS@10.0.0.5:104,VIEWER@127.0.0.1:11113"`` -> {AE title: RemoteAE}; ValueError names a bad item."""
    table: dict[str, RemoteAE] = {}
    for item in _split(value):
        ae, sep, address = item.rpartition("@")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not valid_ae_title(ae) or not host or not port.isdigit():
            raise ValueError(f"remote {item!r} is not AE@host:port")
        if not 0 < int(port) < 65536:
            raise ValueError(f"remote {item!r}: port out of range")
        table[ae.strip()] = RemoteAE(ae.strip(), host.strip("[]"), int(port))
    return table


def parse_allowed(value: str | list[str]) -> list[AllowedPeer]:
    """``"CT01,MR01@10.1.2.3"`` -> allow-list entries; ValueError names a bad item."""
    peers = []
    for item in _split(value):
        ae, sep, host = item.partition("@")
        if not valid_ae_title(ae) or (sep and not host):
            raise ValueError(f"allowed calling AE {item!r} is not AE or AE@host")
        peers.append(AllowedPeer(ae.strip(), host or None))
    return peers
