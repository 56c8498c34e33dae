"""Alembic migrations, one branch per owner of tables.

Each owner keeps its revisions in a ``migrations/`` folder beside its models, with ``branch_labels`` set to
its name on its first revision, so services evolve their own tables independently and ``upgrade heads``
brings all of them current. The owners are listed here by module name (engine imports no service: the
folders are located without importing them).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = ["MIGRATION_OWNERS", "alembic_config", "upgrade", "current_heads", "expected_heads", "is_current"]

#: module whose ``migrations/`` folder holds that owner's revisions (missing modules are skipped)
MIGRATION_OWNERS: tuple[str, ...] = (
    "engine.messaging",  # durable message store and queue (MLLP issue)
    "services.records",  # FHIR resources, history and search indexes
    "services.pacs",  # DICOM instance index
    "services.lis",  # order <-> result loop
)


def _locations() -> list[str]:
    found = []
    for owner in MIGRATION_OWNERS:
        try:
            spec = importlib.util.find_spec(owner)
        except ModuleNotFoundError:
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(list(spec.submodule_search_locations)[0]) / "migrations"
        if folder.is_dir():
            found.append(str(folder))
    return found


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", " ".join(_locations()))
    cfg.set_main_option("path_separator", "space")
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, target: str = "heads") -> None:
    """Bring every branch to ``target`` (default: all heads)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def expected_heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_heads(engine: Engine) -> set[str]:
    # MigrationContext.configure logs "Context impl ..." at INFO: too chatty for a /ready probe
    alembic_log = logging.getLogger("alembic.runtime.migration")
    previous = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        alembic_log.setLevel(previous)


def is_current(engine: Engine) -> bool:
    """True when the database carries exactly the code's migration heads (for /ready)."""
    try:
        return current_heads(engine) == expected_heads()
    except Exception:
        return False
