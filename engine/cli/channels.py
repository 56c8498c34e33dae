"""``conduit channels``: validate channel files, list them, reload them in the running server.

Examples::

    conduit channels check                 # the shipped channels and CONDUIT_CHANNELS_DIR
    conduit channels check /etc/conduit/channels
    conduit channels list
    conduit channels reload                # SIGHUP to the server whose pid is in <data_dir>/conduit.pid
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import typer
from rich.table import Table

from engine.cli._common import fail, load_settings, out

__all__ = ["register"]

channels_app = typer.Typer(help="Channel files: check, list, reload without a restart.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(channels_app, name="channels")


def _dirs(folder: Path | None) -> list[Path]:
    from engine.messaging.registry import channel_dirs
    from engine.messaging.settings import MessagingSettings

    return [folder] if folder is not None else channel_dirs(MessagingSettings())


@channels_app.command("check")
def check(
    folder: Path = typer.Argument(None, help="Folder of *.yaml channel files \\[default: those in force]."),
) -> None:
    """Validate channel files; every problem is printed as FILE:LINE: FIELD: PROBLEM (exit 1 if any)."""
    from engine.messaging.channels import check_channel_dirs, check_transforms

    channels, problems = check_channel_dirs(_dirs(folder))
    names = _mapping_names()
    if isinstance(names, str):
        typer.echo(f"warning: transforms not checked: {names}")
    else:
        problems += check_transforms(channels, names)
    for problem in problems:
        typer.echo(str(problem))  # one line per problem, never wrapped: editors jump to FILE:LINE
    if problems:
        raise fail(f"{len(problems)} problem(s) in channel files")
    typer.echo(f"{len(channels)} channel(s) OK: {', '.join(sorted(channels)) or '(none)'}")


def _mapping_names() -> set[str] | str:
    """The mapping names in force, or why they could not be loaded."""
    try:
        from engine.mapping.registry import default_registry

        return set(default_registry().mappings)
    except ImportError:
        return "no mapping engine in this build"
    except Exception as exc:  # a broken mapping file is reported by the mapping checks, not here
        return f"{exc.__class__.__name__}: {exc}"


@channels_app.command("list")
def list_channels(
    folder: Path = typer.Argument(None, help="Folder of channel files \\[default: those in force]."),
) -> None:
    """The channels and what they do."""
    from engine.messaging.channels import check_channel_dirs

    channels, problems = check_channel_dirs(_dirs(folder))
    table = Table(
        "channel", "enabled", "source", "filters", "transform", "destinations", "file", title="channels"
    )
    for ch in sorted(channels.values(), key=lambda c: c.name):
        source = f"mllp://{ch.source.host}:{ch.source.port}" if ch.source else "-"
        table.add_row(
            ch.name, "yes" if ch.enabled else "no", source, "yes" if ch.filter else "-", ch.transform or "-",
            ", ".join(f"{d.name} ({d.url})" for d in ch.destinations) or "-", ch.file,
        )  # fmt: skip
    out.print(table)
    if problems:
        raise fail(f"{len(problems)} problem(s) in channel files: run `conduit channels check`")


@channels_app.command("reload")
def reload() -> None:
    """Make the running `conduit serve` re-read its channel files (SIGHUP), after checking them here."""
    from engine.messaging.channels import check_channel_dirs
    from engine.messaging.wiring import PID_FILE

    _, problems = check_channel_dirs(_dirs(None))
    for problem in problems:
        typer.echo(str(problem))  # one line per problem, never wrapped: editors jump to FILE:LINE
    if problems:
        raise fail("not reloading: fix the channel files first (the server keeps the channels in force)")
    pid_file = load_settings().data_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise fail(f"no running server found ({pid_file} missing or unreadable)") from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise fail(f"no running server with pid {pid} (stale {pid_file})") from exc
    except PermissionError as exc:
        raise fail(f"not allowed to signal pid {pid}") from exc
    out.print(f"reload signalled to conduit serve (pid {pid})")
