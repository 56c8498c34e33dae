"""The main process's side of ``--mllp-processes``: a reload (SIGHUP) is forwarded only to children that
said they handle it; one asked while a child starts is delivered when the child says ``ready``."""

from __future__ import annotations

import signal

from engine.ingest_processes import IngestChildren


class _Proc:
    def __init__(self) -> None:
        self.signals: list[int] = []

    def poll(self) -> None:
        return None  # running

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


def _supervisor() -> tuple[IngestChildren, _Proc, list[set[str] | None]]:
    woken: list[set[str] | None] = []
    children = IngestChildren(1, [], {}, woken.append)
    proc = _Proc()
    children._children[0].proc = proc  # type: ignore[assignment]
    return children, proc, woken


def test_reload_waits_for_a_starting_child() -> None:
    children, proc, woken = _supervisor()
    child = children._children[0]
    children.reload()
    assert proc.signals == [], "SIGHUP's default action would end a child still importing"
    children._relay(child, [b"ready", b"wake lab"])
    assert proc.signals == [signal.SIGHUP], "the held reload is delivered once the child is ready"
    assert woken == [{"lab"}], "'ready' is not mistaken for an unknown line (which wakes every queue)"
    children.reload()
    assert proc.signals == [signal.SIGHUP, signal.SIGHUP], "a ready child gets reloads at once"


def test_no_held_reload_means_no_signal() -> None:
    children, proc, _ = _supervisor()
    children._relay(children._children[0], [b"ready"])
    assert proc.signals == []


def test_sigterm_reaches_a_starting_child() -> None:
    children, proc, _ = _supervisor()
    children.signal(signal.SIGTERM)
    assert proc.signals == [signal.SIGTERM]
