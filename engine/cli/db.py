"""``conduit db``: database migrations."""

from __future__ import annotations

import typer

from engine.cli._common import fail, load_settings, out

db_app = typer.Typer(help="Database schema: migrations and status.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply every pending migration to CONDUIT_DATABASE_URL (default: the embedded SQLite file)."""
    from engine.db import Database, migrate

    settings = load_settings()
    db = Database(str(settings.database_url))
    try:
        db.check_durability()
        migrate.upgrade(db.engine)
    except Exception as exc:
        raise fail(f"migration failed: {exc}") from exc
    finally:
        db.dispose()
    out.print(f"database is current: {', '.join(sorted(migrate.expected_heads())) or '(no migrations)'}")


@db_app.command("status")
def status() -> None:
    """Show whether the database carries the code's migration heads."""
    from engine.db import Database, migrate

    db = Database(str(load_settings().database_url))
    try:
        current, expected = migrate.current_heads(db.engine), migrate.expected_heads()
    finally:
        db.dispose()
    out.print(f"current:  {', '.join(sorted(current)) or '(empty)'}")
    out.print(f"expected: {', '.join(sorted(expected))}")
    if current != expected:
        raise typer.Exit(1)
