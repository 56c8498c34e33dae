"""Database access: engine creation, the unit of work, the declarative base and migrations.

The caller owns the session lifetime::

    with db.unit_of_work() as uow:
        repo = records(uow)          # services receive the unit of work, never commit themselves
        repo.create({...})
    # committed here; events queued with uow.defer() are published now
"""

from engine.db.base import NAMING_CONVENTION, Base
from engine.db.database import SQLITE_BEGIN, Database, UnitOfWork

__all__ = ["NAMING_CONVENTION", "Base", "Database", "UnitOfWork", "SQLITE_BEGIN"]
