"""Alembic environment: runs on the connection handed over by engine.db.migrate (no alembic.ini)."""

from alembic import context

from engine.db.base import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - always driven through engine.db.migrate
    raise RuntimeError("run migrations with `conduit db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
