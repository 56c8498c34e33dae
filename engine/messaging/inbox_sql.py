"""The inbox's batch write on the driver's own cursor, with statements compiled once per dialect.

Through ``Connection.execute`` each of the inbox's three statements per transaction (duplicate lookup,
message insert, stage insert) paid SQLAlchemy's per-execution work — cache key, parameter processing,
result set-up — a good part of the inbox writer's time per commit. Here the statements are still built
from the tables and compiled by the dialect (``engine.db.direct``), and every parameter goes through its column type's own bind
processor (so the stored values are those the Core statements would store), but compiling happens once
and the rows go straight to the DBAPI cursor: SQLite inserts the messages one by one and reads
``lastrowid`` (in the writer's own transaction: nothing else can interleave), psycopg queues them in one
pipeline, each message with its first stage in one statement (a CTE hands the stage the message's id) on
a cursor of its own, so the stages cost no round trip of their own, and the ids are read once the
pipeline has ended; BEGIN and COMMIT go out in the same pipeline, and with ``ON CONFLICT (dedup_key) DO
NOTHING`` the duplicate look-up before the inserts is not needed either: one wait per transaction
(BEGIN, inserts, COMMIT, then the sync). An ``executemany(returning=True)`` waited for its ids before the
COMMIT went out, and psycopg's own BEGIN for a sync of its own: three waits (strace of one sender).

Driver errors come out as SQLAlchemy's (``IntegrityError``, ``DBAPIError``), the connection invalidated
when the server went away, as ``Connection.execute`` would raise them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Dialect

from engine.db.direct import CompiledStatement, driver_cursor
from engine.db.one_wait import OneWait, positional_sql
from engine.messaging.models import Message, MessageStage

__all__ = ["InboxSql", "driver_cursor"]

_M = Message.__table__
_S = MessageStage.__table__


class InboxSql:
    """The inbox's statements for one dialect, compiled at first use (thread-safe: a race compiles twice)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sqlite = dialect.name == "sqlite"
        # psycopg 3 pipelines an executemany and keeps each parameter set's RETURNING rows apart
        self._pipelined = dialect.driver == "psycopg"
        self._inserts: dict[tuple[str, tuple[str, ...]], CompiledStatement] = {}
        self._lookups: dict[int, tuple[str, Callable[[Sequence[str]], Any]]] = {}
        self._positional: dict[str, tuple[bytes, list[str], int]] = {}
        self._sessions = itertools.count()
        received = _M.c.received_at.type.dialect_impl(dialect)
        self._received_at: Callable[[Any], datetime] | None = received.result_processor(dialect, None)

    def _insert(self, table: str, keys: tuple[str, ...]) -> CompiledStatement:
        found = self._inserts.get((table, keys))
        if found is None:
            if table == "message":
                stmt = insert(_M) if self._sqlite else insert(_M).returning(_M.c.id)
                compiled = stmt.compile(dialect=self._dialect, column_keys=list(keys))
            else:  # for_executemany: no implicit RETURNING of the ids nobody reads
                compiled = insert(_S).compile(
                    dialect=self._dialect, column_keys=list(keys), for_executemany=True
                )
            found = self._inserts[(table, keys)] = CompiledStatement(compiled, self._dialect)
        return found

    def _insert_both(
        self, keys: tuple[str, ...], stage_keys: tuple[str, ...], skip_duplicates: bool = False
    ) -> CompiledStatement:
        """The message and its first stage in one statement: the stage's ``message_id`` is the id the
        message's INSERT returns (a CTE), so one round trip writes both (the stage's parameters are
        named ``stage_<key>`` beside the message's). ``skip_duplicates``: a message whose dedup_key is
        taken is not inserted (``ON CONFLICT DO NOTHING``), nor its stage, and nothing is returned."""
        kind = "message+stage" + ("-new" if skip_duplicates else "")
        found = self._inserts.get((kind, keys + ("|",) + stage_keys))
        if found is None:
            values = {k: bindparam(k, type_=_M.c[k].type) for k in keys}
            if skip_duplicates:
                message = pg_insert(_M).values(values).on_conflict_do_nothing(index_elements=["dedup_key"])
            else:
                message = insert(_M).values(values)
            m = message.returning(_M.c.id).cte("m")
            rest = [k for k in stage_keys if k != "message_id"]
            values = [bindparam(f"stage_{k}", type_=_S.c[k].type) for k in rest]
            stmt = insert(_S).from_select(["message_id", *rest], select(m.c.id, *values))
            compiled = stmt.returning(_S.c.message_id).compile(dialect=self._dialect)
            found = CompiledStatement(compiled, self._dialect)
            self._inserts[(kind, keys + ("|",) + stage_keys)] = found
        return found

    @property
    def writes_both_at_once(self) -> bool:
        """Whether :meth:`insert_messages_and_stages` is to be used (psycopg's pipelined executemany)."""
        return self._pipelined

    def insert_messages_and_stages(
        self, cursor: Any, rows: Sequence[Mapping[str, Any]], stages: Sequence[Mapping[str, Any]]
    ) -> Callable[[], list[int]]:
        """Insert each message row with its stage row (``message_id`` left out: the message's id goes
        there) in one pipelined ``executemany``. Returns how to read the messages' ids, in the order of
        ``rows``, once the pipeline has ended: asked for now they would cost a round trip of their own
        (a flush) before the pipeline's closing one."""
        stmt = self._insert_both(tuple(rows[0]), tuple(stages[0]))
        cursors = _execute_each(cursor, stmt, rows, stages)
        return lambda: [int(row[0]) for row in _first_rows(cursors)]  # type: ignore[index]

    @property
    def skips_duplicates(self) -> bool:
        """Whether the inbox writes new messages with ``ON CONFLICT (dedup_key) DO NOTHING`` and no
        look-up first (:meth:`queue_new_messages_and_stages`): PostgreSQL through psycopg."""
        return self._pipelined

    def one_wait(self, connection: Any, session: dict[str, Any]) -> OneWait:
        """A transaction of new messages written in one write and one wait (``engine.db.one_wait``) on
        the psycopg ``connection``, which must be in autocommit mode; its BEGIN is queued already.
        ``session`` is the caller's scratch space for this connection (the statements prepared on it).
        Raises psycopg's OperationalError, before anything is sent, when the connection is found closed."""
        if "prepared" not in session:
            session["prepared"] = set()
            session["tag"] = next(self._sessions)  # new names: see OneWait
        tx = OneWait(connection, session["prepared"])
        tx.check_connection()
        tx.execute(b"BEGIN")
        tx.execute(b"SET LOCAL plan_cache_mode = auto")  # see pipeline()
        return tx

    def queue_new_messages_and_stages(
        self,
        tx: OneWait,
        session: dict[str, Any],
        rows: Sequence[Mapping[str, Any]],
        stages: Sequence[Mapping[str, Any]],
    ) -> Callable[[list[Any]], list[int | None]]:
        """Queue each message row with its stage row (``message_id`` left out: the message's id goes there)
        on ``tx`` (from :meth:`one_wait` with the same ``session``), but a message whose ``dedup_key`` is
        already stored (by an earlier message of ``rows``, or another transaction, even one still running:
        PostgreSQL waits for it) is left out, with its stage. Returns how to read the ids, in the order of
        ``rows`` (None for one left out), from the results of ``tx.run()``. No duplicate look-up is needed
        before the inserts, so the whole transaction is one write and one wait."""
        stmt = self._insert_both(tuple(rows[0]), tuple(stages[0]), skip_duplicates=True)
        found = self._positional.get(stmt.sql)
        if found is None:
            found = self._positional[stmt.sql] = (*positional_sql(stmt.sql), len(self._positional))
        sql, names, number = found
        name = b"conduit_inbox_%d_%d" % (session["tag"], number)
        at = []
        for row, stage in zip(rows, stages, strict=True):
            values = stmt.parameters({**row, **{f"stage_{k}": v for k, v in stage.items()}})
            at.append(tx.execute_prepared(name, sql, [values[n] for n in names]))

        def ids(results: list[Any]) -> list[int | None]:
            return [
                int(results[i].get_value(0, 0)) if results[i].ntuples else None  # text format: b"123"
                for i in at
            ]

        return ids

    def pipeline(self, cursor: Any) -> AbstractContextManager[Any]:
        """The batch's statements in one psycopg pipeline, their results read at its end. Nothing on other
        drivers.

        On a connection in autocommit mode (the inbox writer's, see ``KeptConnection(autocommit=True)``)
        the pipeline starts with the transaction's own ``BEGIN``: psycopg's implicit BEGIN (outside
        autocommit) is followed by a sync, a round trip of its own before any insert goes out. Then
        ``SET LOCAL plan_cache_mode = auto``: the connections are opened with ``force_custom_plan`` (for
        the searches), which would plan the inbox's prepared INSERT again on every execution (measured
        here: ~0.1 ms of the backend's CPU per message, a quarter of it)."""
        return _pipeline(cursor.connection) if self._pipelined else nullcontext()

    @property
    def begins_in_pipeline(self) -> bool:
        """Whether :meth:`pipeline` begins the transaction itself on a connection in autocommit mode
        (psycopg), so the inbox writer keeps its connection in that mode."""
        return self._pipelined

    @property
    def commits_in_pipeline(self) -> bool:
        """Whether :meth:`commit_in_pipeline` sends the COMMIT (psycopg); elsewhere the transaction
        commits as usual."""
        return self._pipelined

    def commit_in_pipeline(self, cursor: Any) -> None:
        """On psycopg, COMMIT queued at the end of the pipeline (or of a :class:`OneWait`): it goes out
        with the inserts and is waited for by the pipeline's closing round trip, and the transaction's
        own commit then finds nothing left to do (psycopg sends no COMMIT outside a transaction).
        Nothing elsewhere."""
        if isinstance(cursor, OneWait):
            cursor.execute(b"COMMIT")
        elif self._pipelined:
            cursor.connection.execute("COMMIT")  # a cursor of its own: ``cursor`` keeps the inserted ids

    def insert_messages(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert the message rows (all with the same keys); their ids, in the order of ``rows``."""
        stmt = self._insert("message", tuple(rows[0]))
        params = [stmt.parameters(r) for r in rows]
        if self._pipelined:
            cursor.executemany(stmt.sql, params, returning=True)
            return _returned_ids(cursor)
        ids = []
        for p in params:
            cursor.execute(stmt.sql, p)
            ids.append(int(cursor.lastrowid if self._sqlite else cursor.fetchone()[0]))
        return ids

    def insert_stages(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the stage rows (all with the same keys)."""
        stmt = self._insert("message_stage", tuple(rows[0]))
        cursor.executemany(stmt.sql, [stmt.parameters(r) for r in rows])

    def lookup(self, cursor: Any, keys: Sequence[str]) -> list[tuple[int, str, datetime, str]]:
        """(id, dedup_key, received_at, ack_code) of the stored messages holding any of ``keys``."""
        sql, params = self._lookup(len(keys))
        cursor.execute(sql, params(keys))
        convert = self._received_at
        return [
            (int(r[0]), r[1], r[2] if convert is None else convert(r[2]), r[3]) for r in cursor.fetchall()
        ]

    def _lookup(self, n: int) -> tuple[str, Callable[[Sequence[str]], Any]]:
        found = self._lookups.get(n)
        if found is None:
            stmt = select(_M.c.id, _M.c.dedup_key, _M.c.received_at, _M.c.ack_code).where(
                _M.c.dedup_key.in_([""] * n)
            )
            compiled = stmt.compile(dialect=self._dialect, compile_kwargs={"render_postcompile": True})
            if compiled.positional:
                found = (compiled.string, tuple)
            else:
                names = list(compiled.params)
                found = (compiled.string, lambda keys: dict(zip(names, keys, strict=True)))
            if len(self._lookups) < 64:  # batch sizes repeat; do not grow without bound
                self._lookups[n] = found
        return found


@contextmanager
def _pipeline(conn: Any) -> Iterator[None]:
    with conn.pipeline():
        if conn.autocommit:
            with conn.cursor() as cursor:  # results nobody reads: closed at once
                cursor.execute("BEGIN")
                cursor.execute("SET LOCAL plan_cache_mode = auto")
        yield


def _execute_each(
    cursor: Any,
    stmt: CompiledStatement,
    rows: Sequence[Mapping[str, Any]],
    stages: Sequence[Mapping[str, Any]],
) -> list[Any]:
    """Each message with its stage in a statement on a cursor of its own, queued in the pipeline: their
    results are read when the pipeline ends, with the COMMIT's (an ``executemany(returning=True)`` would
    wait for its results at once, a round trip of its own before the COMMIT goes out)."""
    conn = cursor.connection
    cursors = []
    for row, stage in zip(rows, stages, strict=True):
        each = conn.cursor()
        each.execute(stmt.sql, stmt.parameters({**row, **{f"stage_{k}": v for k, v in stage.items()}}))
        cursors.append(each)
    return cursors


def _first_rows(cursors: list[Any]) -> list[tuple[Any, ...] | None]:
    """The row each statement returned (None when it returned none), the cursors then closed."""
    try:
        return [each.fetchone() for each in cursors]
    finally:
        for each in cursors:
            each.close()


def _returned_ids(cursor: Any) -> list[int]:
    """The id each parameter set of a psycopg ``executemany(..., returning=True)`` returned."""
    ids = []
    while True:
        ids.append(int(cursor.fetchone()[0]))
        if not cursor.nextset():
            return ids
