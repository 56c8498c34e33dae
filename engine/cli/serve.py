"""``conduit serve``: every enabled listener in one process."""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Coroutine
from typing import Any

import typer

from engine.cli._common import configure_logging, err, fail, load_settings, out
from engine.errors import ConduitError


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)


def serve(
    only: list[str] = typer.Option(
        None, "--only", help="Run only these listeners (repeatable): fhir, mllp, dicom."
    ),
    without: list[str] = typer.Option(
        None, "--without", help="Run every listener except these (repeatable)."
    ),
    host: str = typer.Option(None, "--host", help="Bind address for all listeners \\[default: 127.0.0.1]."),
    fhir_port: int = typer.Option(None, "--fhir-port", help="FHIR REST port \\[default: 8080]."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow a non-loopback bind without auth and TLS (lab use only)."
    ),
    upgrade_db: bool = typer.Option(
        False, "--upgrade-db", help="Run database migrations first (always done for the embedded SQLite)."
    ),
    mllp_processes: int = typer.Option(
        None,
        "--mllp-processes",
        min=1,
        max=64,
        help="Processes receiving MLLP on the same ports (SO_REUSEPORT), one core each \\[default: 1, "
        "or CONDUIT_MLLP_PROCESSES].",
    ),
    mllp_child: int = typer.Option(None, "--mllp-child", hidden=True),
) -> None:
    """Start Conduit: the FHIR R4 API on http://127.0.0.1:8080/fhir, MLLP on 2575, DICOM on 11112.

    Binds loopback unless told otherwise; a non-loopback address needs CONDUIT_AUTH_TOKEN and TLS.
    Stop with Ctrl-C (SIGINT) or SIGTERM; SIGHUP reloads channels.

    Examples:

      conduit serve
      conduit serve --only fhir
      conduit serve --mllp-processes 2          # MLLP ingest on two cores
      CONDUIT_DATABASE_URL=postgresql+psycopg://conduit@db/conduit conduit serve --upgrade-db
    """
    from engine.runtime import available_listeners, build_runtime, prepare_database, run_listeners

    settings = load_settings(
        host=host, fhir_port=fhir_port, insecure=insecure or None, mllp_processes=mllp_processes
    )
    configure_logging(settings.log_level)
    if mllp_child is not None:
        _serve_ingest_child(settings, mllp_child)
        return
    problem = settings.exposure_problem()
    if problem:
        raise fail(problem, 2)
    if insecure:
        err.print("[bold red]WARNING: --insecure: listeners may be reachable without auth or TLS.[/]")

    names = list(only) if only else available_listeners()
    unknown = [n for n in [*(only or []), *(without or [])] if n not in ("fhir", "mllp", "dicom")]
    if unknown:
        raise fail(f"unknown listener(s): {', '.join(unknown)}; choose from fhir, mllp, dicom", 2)
    names = [n for n in names if n not in (without or [])]
    if not names:
        raise fail("no listener selected", 2)

    try:
        runtime = build_runtime(settings)
        prepare_database(runtime, upgrade=upgrade_db)
    except ConduitError as exc:
        raise fail(str(exc)) from exc

    # Everything imported so far (FHIR models, HL7 tables, mapping files) lives for the whole process:
    # move it out of the collector's reach so each message does not pay for rescanning it (~25% of mapping).
    gc.collect()
    gc.freeze()

    if "mllp" in names and settings.mllp_processes > 1:
        _add_ingest_children(runtime, host=host, insecure=insecure)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, runtime.reload)
        await run_listeners(runtime, names, stop)

    out.print(
        f"Conduit starting ({', '.join(names)}); database: {runtime.db.url.render_as_string(hide_password=True)}"
    )
    _serve_until_stopped(runtime, main())


def _add_ingest_children(runtime: Any, *, host: str | None, insecure: bool) -> None:
    """Have ``run_listeners`` start the MLLP ingest children once the main process listens (a bad
    channel file or a taken port is then reported by the main process, before any child starts)."""
    import os

    from engine.ingest_processes import IngestChildren

    args = ["--host", host] if host else []
    if insecure:
        args.append("--insecure")
    env = {**os.environ, "CONDUIT_MLLP_PROCESSES": str(runtime.settings.mllp_processes)}
    messages = runtime.ports.get("messages")
    pool = messages.pool if messages is not None else None
    children = IngestChildren(
        runtime.settings.mllp_processes - 1,
        args,
        env,
        pool.wake if pool is not None else (lambda channels: None),
        pool.wake_queues if pool is not None else None,
    )
    runtime.background.append(children.run)
    runtime.reload_hooks.append(children.reload)


def _serve_ingest_child(settings: Any, fd: int) -> None:
    """An MLLP ingest child of ``conduit serve --mllp-processes N`` (see engine.ingest_processes): the
    mllp listener alone, its inbox's wake-ups sent to the main process, stopping when that one is gone.
    The main process migrated the schema and runs the workers, retention and the pid file."""
    from engine.ingest_processes import ParentLink
    from engine.runtime import build_runtime, run_listeners

    # a reload (SIGHUP) sent while this child still starts must neither end it (SIGHUP's default) nor
    # be lost: it is noted now and done once the loop runs. The main process holds reloads back until
    # told (ready) that this handler is in place.
    reload_asked = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: reload_asked.set())
    link = ParentLink(fd)
    link.ready()
    try:
        runtime = build_runtime(settings)
    except ConduitError as exc:
        raise fail(str(exc)) from exc
    runtime.ingest_child = True
    inbox, messages = runtime.ports.get("inbox"), runtime.ports.get("messages")
    if inbox is not None:
        inbox.on_stored = link.wake  # the workers run in the main process
    if messages is not None:
        messages.pool.on_queued = link.wake_queues
    gc.collect()
    gc.freeze()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, runtime.reload)
        if reload_asked.is_set():
            runtime.reload()
        link.watch(stop.set)
        await run_listeners(runtime, ["mllp"], stop, runtime.ingest_background)

    _serve_until_stopped(runtime, main())


def _serve_until_stopped(runtime: Any, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` (the listeners) to its end; a configuration or bind failure is the CLI's error."""
    try:
        _run(main)
    except ConduitError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot listen: {exc}") from exc
    finally:
        runtime.db.dispose()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when installed (it comes with uvicorn[standard]): ~15% more requests per core."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
        return
    uvloop.run(coro)
