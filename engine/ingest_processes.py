"""MLLP ingest in several processes: ``conduit serve --mllp-processes N`` (``CONDUIT_MLLP_PROCESSES``).

One Python process stores and acknowledges on one core (the GIL), so the main process of ``conduit serve``
starts N-1 **ingest children** (``python -m engine serve --only mllp --mllp-child FD``). Each opens every
MLLP source of the channel files on the same port with SO_REUSEPORT (the main process too), and the kernel
spreads new connections across the processes by a hash of their addresses. So:

* a connection lives and dies in one process: its messages are stored (group-committed by that process's
  own inbox writer) and answered in the order they came, as with one process. Messages of *different*
  connections never had an order between them (several inbox writers on PostgreSQL already interleave
  them); an ``ordered`` channel keeps the order they were stored in (their ids), as before;
* duplicates across processes are caught by the database: ``message.dedup_key`` is unique, SQLite
  serialises the writers (``BEGIN IMMEDIATE``, busy timeout) so each batch's look-up and insert see the
  others' commits, and on PostgreSQL the inbox inserts with ``ON CONFLICT DO NOTHING`` and answers a
  key it lost to another process with that message's ACK code;
* only MLLP ingest is multiplied: the FHIR API, DICOM, the queue workers, retention and the pid file stay
  in the main process (workers claim stored messages from the database, whoever stored them).

The main process and each child share a socketpair (the child's end is FD):

* child -> main: ``wake <channel>`` lines after a commit that queued pipeline work, and ``queue <name>``
  lines after an inline pipeline run (``ack_after: transformed``) queued deliveries, so the main
  process's queue workers start at once as for its own messages (a lost line costs ``poll_seconds``);
* main -> child: nothing but its end staying open. EOF means the main process is gone, even SIGKILLed:
  the child then stops like on SIGTERM, so no orphan keeps the port.

The main process forwards SIGHUP (channel reload, ``conduit channels reload``) to its children; on
SIGTERM/SIGINT it sends them SIGTERM and waits for them (each finishes its stores and ACKs within
``CONDUIT_MLLP_STOP_GRACE_S``), SIGKILLing one still there after 30 s. A child that dies on its own is started again
(after 1 s, doubling to 30 s while it keeps failing). Children run in a session of their own, so a
terminal's Ctrl-C reaches the main process only and shutdown keeps this order.

Prometheus metrics are per process: /metrics (served by the main process) counts the connections and
messages the main process received, not its children's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["IngestChildren", "ParentLink"]

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0  # a child that ran this long before dying starts again without backoff


class ParentLink:
    """The child's end of the socketpair: sends wake-ups, and tells when the main process is gone."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._lock = threading.Lock()  # inbox writer threads send; one line must not cut into another

    def wake(self, channels: set[str]) -> None:
        """Ask the main process to wake the queue workers of ``channels`` (called from writer threads);
        never blocks: a line that does not fit is dropped (the workers' polling picks the work up)."""
        self._send("".join(f"wake {c}\n" for c in sorted(channels)))

    def wake_queues(self, names: list[str]) -> None:
        """Ask the main process to wake the workers of the queues ``names``."""
        self._send("".join(f"queue {n}\n" for n in names))

    def ready(self) -> None:
        """Tell the main process that SIGHUP is now handled here (until then it holds reloads back:
        SIGHUP's default action would end a child still starting up)."""
        self._send("ready\n")

    def _send(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self._lock:
            try:
                self._sock.send(data)
            except OSError:  # full (main process busy) or gone (we are stopping anyway)
                pass

    def watch(self, gone: Callable[[], None]) -> None:
        """Call ``gone`` on the running event loop once the main process has closed its end."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self._sock.fileno())
                log.warning("mllp ingest child %d: the main process is gone; stopping", os.getpid())
                gone()

        loop.add_reader(self._sock.fileno(), readable)


class _Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.started = 0.0
        self.backoff = 1.0
        self.ready = False  # handles SIGHUP (said so over the link)
        self.reload_pending = False  # a reload came before it was ready


class IngestChildren:
    """Starts ``count`` ingest children and keeps them running until :meth:`run` is cancelled."""

    def __init__(
        self,
        count: int,
        args: Sequence[str],
        env: dict[str, str],
        on_wake: Callable[[set[str] | None], None],
        on_queued: Callable[[list[str]], None] | None = None,
        *,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.count = count
        self._args = list(args)  # ``serve`` options after ``--mllp-child FD``
        self._env = env
        self._on_wake = on_wake
        self._on_queued = on_queued
        self._stop_timeout_s = stop_timeout_s
        self._children = [_Child(i) for i in range(count)]
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if c.proc is not None and c.proc.poll() is None]

    def reload(self) -> None:
        """Forward a channel reload (SIGHUP) to every child; a child still starting gets it once it says
        it is ready (it may have read the channel files already, so the reload is not skipped)."""
        for child in self._children:
            if not child.ready:
                child.reload_pending = True
        self.signal(signal.SIGHUP, only_ready=True)

    def signal(self, sig: int, *, only_ready: bool = False) -> None:
        for child in self._children:
            if only_ready and not child.ready:
                continue
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except OSError:  # exited meanwhile
                    pass

    def _spawn(self, child: _Child) -> None:
        mine, theirs = socket.socketpair()
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "serve", "--mllp-child", str(theirs.fileno()), *self._args],
                env=self._env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # the child has its copy: its exit is then our end's EOF
        mine.setblocking(False)
        child.sock = mine
        child.started = time.monotonic()
        child.ready = child.reload_pending = False
        log.info("mllp: ingest child %d started (pid %d)", child.index + 1, child.proc.pid)

    async def _serve(self, child: _Child) -> None:
        """Relay the child's wake-ups until it exits, then start it again (unless stopping)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                self._spawn(child)
            except OSError as exc:
                child.backoff = min(child.backoff * 2, _BACKOFF_MAX_S)
                log.error("mllp: cannot start ingest child %d: %s", child.index + 1, exc)
                await asyncio.sleep(child.backoff)
                continue
            assert child.sock is not None and child.proc is not None
            buffer = b""
            while True:
                try:
                    data = await loop.sock_recv(child.sock, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                self._relay(child, lines)
            child.sock.close()
            child.sock = None
            child.ready = False
            code = await asyncio.to_thread(child.proc.wait)
            if self._stopping:
                return
            ran = time.monotonic() - child.started
            child.backoff = 1.0 if ran >= _HEALTHY_AFTER_S else min(child.backoff * 2, _BACKOFF_MAX_S)
            log.error(
                "mllp: ingest child %d (pid %d) exited with %s; starting it again in %.0f s",
                child.index + 1,
                child.proc.pid,
                code,
                child.backoff,
            )
            await asyncio.sleep(child.backoff)

    def _relay(self, child: _Child, lines: list[bytes]) -> None:
        channels: set[str] = set()
        queues: list[str] = []
        for line in lines:
            if line == b"ready":
                child.ready = True
                if child.reload_pending and child.proc is not None:
                    child.reload_pending = False
                    try:
                        child.proc.send_signal(signal.SIGHUP)
                    except OSError:  # exited meanwhile: its successor reads the files afresh
                        pass
            elif line.startswith(b"wake "):
                channels.add(line[5:].decode("utf-8", "replace"))
            elif line.startswith(b"queue "):
                queues.append(line[6:].decode("utf-8", "replace"))
            elif line:  # never sent whole: wake every queue rather than miss one
                self._on_wake(None)
                return
        if channels:
            self._on_wake(channels)
        if queues and self._on_queued is not None:
            self._on_queued(queues)

    async def run(self) -> None:
        """Supervise the children; when cancelled, stop them (SIGTERM, then SIGKILL after the grace)."""
        tasks = [asyncio.create_task(self._serve(c)) for c in self._children]
        try:
            await asyncio.gather(*tasks)
        finally:
            self._stopping = True
            await asyncio.shield(asyncio.to_thread(self._stop_all))
            for task in tasks:
                task.cancel()

    def _stop_all(self) -> None:
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for child in self._children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("mllp: ingest child pid %d did not stop; killing it", child.proc.pid)
                child.proc.kill()
                child.proc.wait()
