"""Helpers shared by CLI commands: settings, logging and the runtime, with errors printed for people."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from engine.errors import ConduitError
from engine.settings import ConduitSettings

err = Console(stderr=True)
out = Console()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_settings(**overrides: object) -> ConduitSettings:
    try:
        return ConduitSettings(**{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # pydantic ValidationError names the field
        err.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def runtime_or_exit(settings: ConduitSettings, *, upgrade: bool = False):  # type: ignore[no-untyped-def]
    from engine.runtime import build_runtime, prepare_database

    try:
        runtime = build_runtime(settings)
        prepare_database(runtime, upgrade=upgrade)
    except ConduitError as exc:
        raise fail(str(exc)) from exc
    return runtime
