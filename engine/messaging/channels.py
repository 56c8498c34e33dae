"""Channels: what a channel file says, parsed and validated with ``file:line: field: problem`` errors.

A channel file (YAML, one channel per file)::

    name: lab-results
    source:
      url: mllp://127.0.0.1:2576
      ack_mode: auto            # auto (MSH-15/16 decide), original, enhanced
      ack_after: stored         # stored | transformed (answer AE when the mapping fails)
      allowed_senders: ["LAB^*"]   # MSH-3^MSH-4 patterns
      allowed_peers: ["127.0.0.1/32"]
      duplicate_window: 24h     # MSH-3+MSH-4+MSH-10 seen within it -> answered with the original ACK
      max_frame_bytes: 10485760
      default_charset: utf-8
      tls: {cert: server.pem, key: server.key, client_ca: ca.pem}
    ordered: false              # keep arrival order through the pipeline and (by default) every destination
    filters: [{message_type: ORU}]
    transform: auto             # or a mapping name; omit to route the raw message
    destinations:
      - name: records
        url: records            # the shared FHIR record store
      - name: archive
        url: file:///var/lib/conduit/archive
        payload: raw            # raw | transformed
        filter: [{trigger: R01}]
        retry: {attempts: 5, initial_delay: 1s, multiplier: 2, max_delay: 5m, jitter: 0.2}
        ordered: true
    retention: {days: 30}
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.messaging.conditions import Condition, compile_conditions
from engine.messaging.durations import parse_duration
from engine.messaging.ports import MllpSource
from engine.messaging.retry import RetryPolicy
from engine.messaging.yamlpos import Located, YamlSyntaxError, load_located

__all__ = [
    "Channel",
    "ChannelProblem",
    "DestinationConfig",
    "SourceConfig",
    "check_channel_dirs",
    "check_transforms",
    "load_channel_dirs",
    "parse_channel",
    "KNOWN_SCHEMES",
]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
KNOWN_SCHEMES = ("records", "file", "http", "https", "mllp", "dicom")

_CHANNEL_KEYS = (
    "name",
    "description",
    "enabled",
    "source",
    "ordered",
    "filters",
    "transform",
    "destinations",
    "retention",
)
_SOURCE_KEYS = (
    "url", "ack_mode", "ack_after", "allowed_senders", "allowed_peers", "duplicate_window", "max_frame_bytes",
    "default_charset", "tls", "idle_timeout",
)  # fmt: skip
_DEST_KEYS = ("name", "url", "payload", "filter", "retry", "ordered", "options")
_RETRY_KEYS = ("attempts", "initial_delay", "multiplier", "max_delay", "jitter")

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class ChannelProblem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(file)'}: {self.message}"


@dataclass(frozen=True)
class SourceConfig:
    url: str
    host: str
    port: int
    ack_mode: str = "auto"
    ack_after: str = "stored"
    allowed_senders: tuple[str, ...] = ()
    allowed_peers: tuple[str, ...] = ()
    duplicate_window_s: float = 86400.0
    max_frame_bytes: int = 10 * 1024 * 1024
    default_charset: str = "utf-8"
    idle_timeout_s: float = 300.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    url: str
    scheme: str
    payload: str = "raw"
    filter: Condition | None = None
    retry: RetryPolicy = RetryPolicy()
    ordered: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Channel:
    name: str
    file: str
    source: SourceConfig | None
    destinations: tuple[DestinationConfig, ...] = ()
    filter: Condition | None = None
    transform: str | None = None
    ordered: bool = False
    retention_days: float | None = None
    enabled: bool = True
    description: str = ""
    transform_line: int | None = None

    def destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self.destinations if d.name == name), None)

    def mllp_source(self) -> MllpSource | None:
        s = self.source
        if s is None:
            return None
        return MllpSource(
            channel=self.name,
            host=s.host,
            port=s.port,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
            tls_client_ca=s.tls_client_ca,
            max_frame_bytes=s.max_frame_bytes,
            idle_timeout_s=s.idle_timeout_s,
            default_charset=s.default_charset,
            allowed_senders=s.allowed_senders,
            allowed_peers=s.allowed_peers,
        )


class _Checker:
    def __init__(self, doc: Located, file: str):
        self.doc = doc
        self.file = file
        self.problems: list[ChannelProblem] = []

    def error(self, path: PathKey, message: str) -> None:
        name = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")
        self.problems.append(ChannelProblem(self.file, self.doc.line(path), name, message))

    def unknown_keys(self, value: dict[str, Any], allowed: tuple[str, ...], path: PathKey) -> None:
        for key in value:
            if key not in allowed:
                self.error((*path, str(key)), f"unknown key {key!r}; expected one of {', '.join(allowed)}")

    def mapping(self, value: Any, path: PathKey) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(path, "expected a mapping (key: value lines)")
            return None
        return value

    def boolean(self, value: Any, path: PathKey, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, "expected true or false")
            return default
        return value

    def duration(self, value: Any, path: PathKey, default: float) -> float:
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc))
            return default

    def integer(self, value: Any, path: PathKey, default: int, minimum: int = 0) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error(path, f"expected a whole number >= {minimum}")
            return default
        return value

    def number(self, value: Any, path: PathKey, default: float, minimum: float = 0.0) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            self.error(path, f"expected a number >= {minimum}")
            return default
        return float(value)

    def strings(self, value: Any, path: PathKey) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(path, "expected a list of strings")
            return ()
        return tuple(value)


def _source(c: _Checker, raw: Any) -> SourceConfig | None:
    path: PathKey = ("source",)
    value = c.mapping(raw, path)
    if value is None:
        return None
    c.unknown_keys(value, _SOURCE_KEYS, path)
    url = value.get("url")
    host, port, url_ok = "", 0, False
    if not isinstance(url, str):
        c.error((*path, "url"), "required: the source URL, e.g. mllp://127.0.0.1:2575")
        url = ""
    else:
        parts = urlsplit(url)
        if parts.scheme != "mllp" or not parts.hostname:
            c.error((*path, "url"), f"{url!r}: only mllp://HOST:PORT sources are supported")
        else:
            try:
                host, port, url_ok = parts.hostname, parts.port or 2575, True
            except ValueError:
                c.error((*path, "url"), f"{url!r}: the port must be a number 0-65535")
    ack_mode = value.get("ack_mode", "auto")
    if ack_mode not in ("auto", "original", "enhanced"):
        c.error((*path, "ack_mode"), "expected auto, original or enhanced")
        ack_mode = "auto"
    ack_after = value.get("ack_after", "stored")
    if ack_after not in ("stored", "transformed"):
        c.error((*path, "ack_after"), "expected stored or transformed")
        ack_after = "stored"
    peers = c.strings(value.get("allowed_peers"), (*path, "allowed_peers"))
    for i, peer in enumerate(peers):
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            c.error((*path, "allowed_peers", i), f"{peer!r} is not an IP address or CIDR network")
    charset = value.get("default_charset", "utf-8")
    try:
        "".encode(str(charset))
    except LookupError:
        c.error((*path, "default_charset"), f"unknown character set {charset!r}")
        charset = "utf-8"
    tls = c.mapping(value.get("tls"), (*path, "tls")) or {}
    c.unknown_keys(tls, ("cert", "key", "client_ca"), (*path, "tls"))
    if bool(tls.get("cert")) != bool(tls.get("key")):
        c.error((*path, "tls"), "cert and key go together")
    config = SourceConfig(
        url=url,
        host=host,
        port=port,
        ack_mode=ack_mode,
        ack_after=ack_after,
        allowed_senders=c.strings(value.get("allowed_senders"), (*path, "allowed_senders")),
        allowed_peers=peers,
        duplicate_window_s=c.duration(value.get("duplicate_window"), (*path, "duplicate_window"), 86400.0),
        max_frame_bytes=c.integer(
            value.get("max_frame_bytes"), (*path, "max_frame_bytes"), 10 * 1024 * 1024, 1
        ),
        default_charset=str(charset),
        idle_timeout_s=c.duration(value.get("idle_timeout"), (*path, "idle_timeout"), 300.0),
        tls_cert=tls.get("cert"),
        tls_key=tls.get("key"),
        tls_client_ca=tls.get("client_ca"),
    )
    return config if url_ok else None


def _retry(c: _Checker, raw: Any, path: PathKey) -> RetryPolicy:
    value = c.mapping(raw, path)
    if value is None:
        return RetryPolicy()
    c.unknown_keys(value, _RETRY_KEYS, path)
    d = RetryPolicy()
    policy = RetryPolicy(
        attempts=c.integer(value.get("attempts"), (*path, "attempts"), d.attempts, 1),
        initial_delay=c.duration(value.get("initial_delay"), (*path, "initial_delay"), d.initial_delay),
        multiplier=c.number(value.get("multiplier"), (*path, "multiplier"), d.multiplier, 1.0),
        max_delay=c.duration(value.get("max_delay"), (*path, "max_delay"), d.max_delay),
        jitter=c.number(value.get("jitter"), (*path, "jitter"), d.jitter, 0.0),
    )
    if policy.jitter > 1:
        c.error((*path, "jitter"), "jitter is a fraction between 0 and 1")
    return policy


def destination_scheme(url: str) -> str:
    if url in ("records", "records:", "records://"):
        return "records"
    return urlsplit(url).scheme.lower()


def _destinations(c: _Checker, raw: Any, ordered_default: bool = False) -> tuple[DestinationConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.error(("destinations",), "expected a list of destinations")
        return ()
    out: list[DestinationConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path: PathKey = ("destinations", i)
        value = c.mapping(item, path)
        if value is None:
            c.error(path, "a destination is a mapping with at least url:")
            continue
        c.unknown_keys(value, _DEST_KEYS, path)
        url = value.get("url")
        if not isinstance(url, str) or not url:
            c.error((*path, "url"), "required: records, mllp://host:port, http(s)://..., file:///folder")
            continue
        scheme = destination_scheme(url)
        if scheme not in KNOWN_SCHEMES:
            c.error((*path, "url"), f"unknown scheme {scheme!r}; expected one of {', '.join(KNOWN_SCHEMES)}")
            continue
        if scheme == "file":
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                c.error((*path, "url"), "file destinations need an absolute folder: file:///path/to/folder")
        name = value.get("name", scheme)
        if not isinstance(name, str) or not NAME.match(name):
            c.error((*path, "name"), "a name is letters, digits, '.', '_' or '-' (max 100)")
            continue
        if name in seen:
            c.error((*path, "name"), f"destination name {name!r} is used twice in this channel")
        seen.add(name)
        payload = value.get("payload", "transformed" if scheme == "records" else "raw")
        if payload not in ("raw", "transformed"):
            c.error((*path, "payload"), "expected raw or transformed")
            payload = "raw"
        if scheme == "records" and payload != "transformed":
            c.error((*path, "payload"), "the records destination takes the transformed Bundle")
        errors: list[tuple[PathKey, str]] = []
        predicate = compile_conditions(value.get("filter"), (*path, "filter"), errors)
        for epath, msg in errors:
            c.error(epath, msg)
        options = c.mapping(value.get("options"), (*path, "options")) or {}
        out.append(
            DestinationConfig(
                name=name,
                url=url,
                scheme=scheme,
                payload=payload,
                filter=predicate,
                retry=_retry(c, value.get("retry"), (*path, "retry")),
                ordered=c.boolean(value.get("ordered"), (*path, "ordered"), ordered_default),
                options=dict(options),
            )
        )
    return tuple(out)


def parse_channel(doc: Located, file: str) -> tuple[Channel | None, list[ChannelProblem]]:
    """Validate one channel document; every problem is reported, not only the first."""
    c = _Checker(doc, file)
    value = c.mapping(doc.value, ())
    if value is None:
        c.error((), "a channel file is a mapping with name:, source:, destinations:")
        return None, c.problems
    c.unknown_keys(value, _CHANNEL_KEYS, ())
    name = value.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        c.error(("name",), "required: letters, digits, '.', '_' or '-' (max 100)")
        name = None
    source = _source(c, value.get("source"))
    errors: list[tuple[PathKey, str]] = []
    predicate = compile_conditions(value.get("filters"), ("filters",), errors)
    for epath, msg in errors:
        c.error(epath, msg)
    transform = value.get("transform")
    if transform is not None and (not isinstance(transform, str) or not transform.strip()):
        c.error(("transform",), "expected auto or a mapping name")
        transform = None
    ordered = c.boolean(value.get("ordered"), ("ordered",), False)
    destinations = _destinations(c, value.get("destinations"), ordered)
    if transform is None and any(d.scheme == "records" for d in destinations):
        c.error(("transform",), "the records destination needs a transform (auto or a mapping name)")
    retention = c.mapping(value.get("retention"), ("retention",)) or {}
    c.unknown_keys(retention, ("days",), ("retention",))
    days = retention.get("days")
    retention_days = c.number(days, ("retention", "days"), 0.0) if days is not None else None
    if name is None or c.problems:
        return None, c.problems
    channel = Channel(
        name=name,
        file=file,
        source=source,
        destinations=destinations,
        filter=predicate,
        transform=transform,
        ordered=ordered,
        retention_days=retention_days,
        enabled=c.boolean(value.get("enabled"), ("enabled",), True),
        description=str(value.get("description") or ""),
        transform_line=doc.line(("transform",)) if transform else None,
    )
    return (channel if not c.problems else None), c.problems


def _env_overrides(channel: Channel, env: dict[str, str]) -> Channel:
    """CONDUIT_MLLP_HOST / CONDUIT_MLLP_PORT move the default channel's listener (tests and quick starts)."""
    if channel.name != "default" or channel.source is None:
        return channel
    from dataclasses import replace

    source = channel.source
    if env.get("CONDUIT_MLLP_HOST"):
        source = replace(source, host=env["CONDUIT_MLLP_HOST"])
    if env.get("CONDUIT_MLLP_PORT", "").isdigit():
        source = replace(source, port=int(env["CONDUIT_MLLP_PORT"]))
    return replace(channel, source=source)


def check_channel_dirs(
    dirs: list[Path], env: dict[str, str] | None = None
) -> tuple[dict[str, Channel], list[ChannelProblem]]:
    """Every channel of ``dirs`` (later folders replace earlier channels of the same name) and every
    problem found, across files too (two enabled channels on one host:port)."""
    env = dict(os.environ) if env is None else env
    channels: dict[str, Channel] = {}
    problems: list[ChannelProblem] = []
    for folder in dirs:
        if not folder.is_dir():
            problems.append(ChannelProblem(str(folder), None, "", "no such folder"))
            continue
        names_here: dict[str, str] = {}
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            try:
                doc = load_located(path)
            except YamlSyntaxError as exc:
                problems.append(ChannelProblem(str(path), exc.line, "", f"YAML syntax: {exc}"))
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(ChannelProblem(str(path), None, "", f"cannot read: {exc}"))
                continue
            channel, found = parse_channel(doc, str(path))
            problems.extend(found)
            if channel is None:
                continue
            if channel.name in names_here:
                problems.append(
                    ChannelProblem(
                        str(path),
                        doc.line(("name",)),
                        "name",
                        f"channel {channel.name!r} is also defined in {names_here[channel.name]}",
                    )  # fmt: skip
                )
                continue
            names_here[channel.name] = str(path)
            channels[channel.name] = _env_overrides(channel, env)
    endpoints: dict[tuple[str, int], str] = {}
    for channel in channels.values():
        if not channel.enabled or channel.source is None:
            continue
        key = (channel.source.host, channel.source.port)
        if key in endpoints:
            problems.append(
                ChannelProblem(
                    channel.file,
                    None,
                    "source.url",
                    f"{key[0]}:{key[1]} is also the source of channel {endpoints[key]!r}",
                )  # fmt: skip
            )
        endpoints[key] = channel.name
    return channels, problems


def check_transforms(channels: dict[str, Channel], mapping_names: set[str]) -> list[ChannelProblem]:
    """A ``transform:`` naming a mapping that does not exist (``auto`` picks one per message)."""
    return [
        ChannelProblem(ch.file, ch.transform_line, "transform", f"no mapping named {ch.transform!r}")
        for ch in channels.values()
        if ch.transform and ch.transform != "auto" and ch.transform not in mapping_names
    ]


def load_channel_dirs(dirs: list[Path], env: dict[str, str] | None = None) -> dict[str, Channel]:
    """Like :func:`check_channel_dirs` but raise ConfigurationError listing every problem."""
    from engine.errors import ConfigurationError

    channels, problems = check_channel_dirs(dirs, env)
    if not problems:
        # a channel naming a missing mapping would ACK every message and then fail it: refuse it at
        # start and on reload, as `conduit channels check` does
        problems = check_transforms(channels, _mapping_names())
    if problems:
        raise ConfigurationError("invalid channel files:\n" + "\n".join(str(p) for p in problems))
    return {name: ch for name, ch in channels.items() if ch.enabled}


def _mapping_names() -> set[str]:
    from engine.mapping.registry import default_registry

    return set(default_registry().mappings)
