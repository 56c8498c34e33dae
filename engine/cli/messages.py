"""``conduit messages``: list, show, reprocess and prune stored messages.

Examples::

    conduit messages list --status error --since 2h
    conduit messages list --channel default --json | jq '.[].id'
    conduit messages show 42
    conduit messages reprocess 42 43
    conduit messages reprocess --status error --channel default
    conduit messages prune --older-than 30
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from engine.cli._common import err, fail, load_settings, out, runtime_or_exit

__all__ = ["register", "parse_since"]

messages_app = typer.Typer(
    help="Stored messages: list, show every stage, reprocess from raw, prune.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(messages_app, name="messages")


def parse_since(value: str) -> datetime:
    """``2h`` / ``30m`` / ``7d`` ago, or an ISO 8601 date or date-time (UTC when no offset is given)."""
    from engine.messaging.durations import parse_since as parse

    try:
        return parse(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use a duration such as 2h or 7d, or a date such as 2025-01-31"
        ) from None


def _service() -> Any:
    runtime = runtime_or_exit(load_settings())
    return runtime, runtime.port("messages")


@messages_app.command("list")
def list_messages(
    channel: str = typer.Option(None, "--channel", help="Only this channel."),
    status: str = typer.Option(
        None, "--status", help="received, rejected, filtered, processing, done, error or dead."
    ),
    control_id: str = typer.Option(None, "--control-id", help="MSH-10 message control id."),
    since: str = typer.Option(None, "--since", help="Received after: 2h, 7d, or 2025-01-31T08:00."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print only a JSON array (for scripts)."),
) -> None:
    """List stored messages, newest first."""
    from engine.messaging.models import MessageStatus

    known = (*MessageStatus.UNFINISHED, *MessageStatus.FINISHED)
    if status is not None and status not in known:
        raise typer.BadParameter(
            f"unknown status {status!r}; one of {', '.join(known)}", param_hint="--status"
        )
    moment = parse_since(since) if since else None
    runtime, service = _service()
    database = runtime.db.url.render_as_string(hide_password=True)
    try:
        rows = service.store.list(
            channel=channel, status=status, control_id=control_id, since=moment, limit=limit
        )
    finally:
        runtime.db.dispose()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], ensure_ascii=False))
        return
    table = Table(
        "id", "received", "channel", "type", "control id", "sender", "status", "ack", title="messages"
    )
    for r in rows:
        kind = "^".join(p for p in (r.message_type, r.trigger_event) if p)
        style = {"error": "red", "dead": "bold red", "rejected": "yellow", "done": "green"}.get(r.status, "")
        status = f"[{style}]{r.status}[/]" if style else r.status
        # message fields are data, not markup: a sender named "LAB[1]" must print as sent
        fields = [escape(v) for v in (r.received_at[:19], r.channel, kind, r.control_id, r.sender)]
        table.add_row(str(r.id), *fields, status, escape(r.ack_code))
    out.print(table)
    if not rows:
        # the usual cause of an empty list is looking at another data directory than the server's
        out.print(f"no messages match in {escape(database)} (set CONDUIT_DATA_DIR or CONDUIT_DATABASE_URL)")


@messages_app.command("show")
def show(
    message_id: int = typer.Argument(..., help="The message id (from `conduit messages list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the message and its stages as JSON."),
) -> None:
    """Show one message: header fields, the raw message and every stage with its status and errors."""
    from engine.errors import NotFound

    runtime, service = _service()
    try:
        detail = service.store.get(message_id)
    except NotFound as exc:
        raise fail(str(exc)) from exc
    finally:
        runtime.db.dispose()
    if as_json:
        typer.echo(json.dumps(detail.as_dict(), ensure_ascii=False))
        return
    s = detail.summary
    e = escape
    out.print(
        f"[bold]message {s.id}[/]  channel {e(s.channel)}  status [bold]{s.status}[/]  ACK {e(s.ack_code)}"
    )
    out.print(f"received {s.received_at} from {e(s.peer)}  sender {e(s.sender)}  MSH-10 {e(s.control_id)}")
    out.print(
        f"type {e(s.message_type)}^{e(s.trigger_event)}  version {e(s.version)}  reprocessed {detail.reprocessed}x"
    )
    if s.error:
        out.print(f"[red]error:[/] {e(s.error)}")
    out.print("[bold]raw[/]")
    out.print(detail.raw.replace("\r", "\n").rstrip(), markup=False, highlight=False)
    table = Table(
        "stage", "destination", "status", "attempts", "next attempt", "error / response", title="stages"
    )
    for st in detail.stages:
        note = st.last_error or st.response or ""
        table.add_row(
            st.name,
            escape(st.destination or ""),
            st.status,
            str(st.attempts),
            (st.next_attempt_at or "")[:19],
            escape(note),
        )
    out.print(table)


@messages_app.command("reprocess")
def reprocess(
    ids: list[int] = typer.Argument(None, help="Message ids to run again from their raw bytes."),
    status: str = typer.Option(None, "--status", help="Every message in this status (e.g. error, dead)."),
    channel: str = typer.Option(None, "--channel", help="With --status: only this channel."),
) -> None:
    """Run messages through their channel again, from the raw message as received.

    A running `conduit serve` picks them up (its workers poll the queue).
    """
    from engine.errors import ProcessingError

    if not ids and not status:
        raise fail("give message ids or --status", 2)
    runtime, service = _service()
    done, failed = 0, []
    try:
        targets = list(ids or []) + (service.store.ids_with_status(status, channel) if status else [])
        with Progress(console=err, transient=False) as progress:
            task = progress.add_task("reprocessing", total=len(targets))
            for message_id in targets:
                try:
                    service.store.reprocess(message_id)
                    done += 1
                except ProcessingError as exc:
                    failed.append(f"{message_id}: {exc}")
                progress.advance(task)
    finally:
        runtime.db.dispose()
    out.print(f"{done} message(s) queued for reprocessing")
    for line in failed:
        err.print(f"[yellow]skipped[/] {line}")
    if failed:
        raise typer.Exit(1)


@messages_app.command("prune")
def prune(
    older_than: float = typer.Option(
        None, "--older-than", help="Days; overrides the channels' retention.days and the default."
    ),
) -> None:
    """Delete finished messages past their retention (channel `retention: {days: N}`,
    CONDUIT_MESSAGING_RETENTION_DAYS otherwise). Unfinished messages are never deleted."""
    runtime, service = _service()
    try:
        if older_than is not None:
            count = service.store.prune(default_days=older_than, channels=[])
        else:
            count = service.prune()
    finally:
        runtime.db.dispose()
    out.print(f"pruned {count} finished message(s)")
