"""Statements sent to PostgreSQL in ONE write and answered in ONE wait, on libpq's pipeline mode.

For the hottest write there is, the MLLP inbox's commit (BEGIN, a prepared INSERT per message, COMMIT):
psycopg's own pipeline flushes every statement as it is queued (a ``poll`` and a ``send`` each, with the
GIL held, and its Python generators around them), ~0.17-0.25 ms of the client's CPU per one-message
transaction here; the same statements queued in libpq and flushed once cost ~0.07 ms (measured with
``time.process_time`` on this machine, one transaction at a time). Values are adapted by psycopg's own
``Transformer`` (bytes in binary, the rest in text, which the server reads as the type of the column it
goes into), errors come back as psycopg's exception classes (``UniqueViolation`` ...), so callers see
what a psycopg cursor raises, and SQLAlchemy's ``driver_cursor`` turns them into its own.

The connection stays psycopg's: when :meth:`OneWait.run` returns, libpq has left pipeline mode and every
result is read, so psycopg finds it as it left it (idle, or with the transaction the statements left
open, which its ``rollback`` ends as usual). If the connection breaks on the way, or libpq refuses a
step, the connection is closed (psycopg and SQLAlchemy then see it as broken and drop it from the pool):
a connection left half-way through a pipeline is never handed to anybody else.
"""

from __future__ import annotations

import re
import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

__all__ = ["OneWait", "positional_sql"]

_TEXT, _BINARY = PyFormat.TEXT, PyFormat.BINARY
_NAMED = re.compile(r"%\((\w+)\)s")


def positional_sql(sql: str) -> tuple[bytes, list[str]]:
    """psycopg's ``%(name)s`` placeholders as libpq's ``$1 ...`` and the names in that order (a name used
    twice is one parameter). ``%%`` is psycopg's literal percent sign."""
    names: list[str] = []

    def number(found: re.Match[str]) -> str:
        if found.group(1) not in names:
            names.append(found.group(1))
        return f"${names.index(found.group(1)) + 1}"

    return _NAMED.sub(number, sql).replace("%%", "%").encode(), names


class OneWait:
    """Statements queued for one psycopg connection (in autocommit mode: they carry their own BEGIN and
    COMMIT), then sent and answered by :meth:`run`.

    ``prepared``: names of the statements already prepared on this connection's server session; kept by
    the caller for as long as it keeps the connection, and forgotten with it (a psycopg ``rollback``
    deallocates every prepared statement of the session, or may not: a caller that takes the connection
    again prepares under new names)."""

    def __init__(self, connection: Any, prepared: set[bytes]) -> None:
        self.connection = connection
        self._prepared = prepared
        #: (name, sql, values, their formats): a Parse has name and sql, an execution of a prepared
        #: statement name and values, a statement without parameters sql only
        self._commands: list[
            tuple[bytes, bytes | None, Sequence[bytes | None] | None, Sequence[int] | None]
        ] = []
        self._results = 0  # statements queued that answer with a result (not the Parse steps)
        self._to_prepare: list[bytes] = []
        self._transformer = Transformer(connection)
        #: the first answer read was the first statement's error (a backend terminated while idle: its
        #: FATAL answers the BEGIN): the rest were aborted, nothing was done, so running them all again
        #: elsewhere is safe. A connection that broke before any answer was read proves nothing (the
        #: server may have committed before the reset): ``refused`` stays False then.
        self.refused = False
        #: every answer up to the Sync was read: the server's verdict on the statements is known (an
        #: error among them means the transaction was rolled back, its COMMIT never done)
        self.answered = False
        self._answers: list[Any] = []

    def execute(self, sql: bytes) -> int:
        """Queue a statement without parameters; the index of its result in :meth:`run`'s list."""
        self._commands.append((b"", sql, None, None))
        self._results += 1
        return self._results - 1

    def execute_prepared(self, name: bytes, sql: bytes, values: Sequence[Any]) -> int:
        """Queue ``sql`` (``$n`` placeholders) with ``values``, as the prepared statement ``name`` (prepared
        first unless this session has it); the index of its result in :meth:`run`'s list."""
        if name not in self._prepared and name not in self._to_prepare:
            self._to_prepare.append(name)
            self._commands.append((name, sql, None, None))  # a Parse: its result is not counted
        # bytes go in binary: as they are, where text would double them into hex for the server to decode
        # (the message's raw bytes, the biggest value of the inbox's insert); the rest as text, which the
        # server reads as the type of the column each goes into
        binary = [isinstance(v, bytes) for v in values]
        params = self._transformer.dump_sequence(values, [_BINARY if b else _TEXT for b in binary])
        self._commands.append((name, None, params, [int(b) for b in binary] if any(binary) else None))
        self._results += 1
        return self._results - 1

    def check_connection(self) -> None:
        """Raise psycopg's OperationalError when the server has closed the connection meanwhile (an
        idle session killed, a restart): nothing has been sent yet, so the caller may run the same
        statements again on another connection."""
        pgconn = self.connection.pgconn
        if pgconn.status == pq.ConnStatus.OK:
            try:
                pgconn.consume_input()  # reads what came while idle: a FATAL message, the end of the stream
            except psycopg.OperationalError:
                pass
        if pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError("the connection to the server was lost")

    def run(self) -> list[Any]:
        """Send every queued statement and a Sync in one write, wait for the answers: the results (libpq
        ``PGresult``) in the order of the statements (Parse steps left out). The first statement that
        failed is raised (psycopg's exception for its SQLSTATE), once every answer has been read.

        Blocks this thread while it waits; an event loop drives the same steps without blocking:
        :meth:`send`, :meth:`flush` until False (waiting for the socket to be writable), :meth:`read`
        until True (waiting for it to be readable), then :meth:`results`."""
        self.send()
        # poll, not select: a busy process may hold file descriptors beyond select's 1024
        writable, readable = select.poll(), select.poll()
        writable.register(self.socket, select.POLLOUT)
        readable.register(self.socket, select.POLLIN)
        while self.flush():
            writable.poll()
        while not self.read():
            readable.poll()
        return self.results()

    @property
    def socket(self) -> int:
        """The connection's file descriptor, to wait on."""
        return int(self.connection.pgconn.socket)

    def send(self) -> None:
        """Queue every statement and the Sync in libpq (pipeline mode): what fits goes out at once, the
        rest with :meth:`flush`."""
        pgconn = self.connection.pgconn
        with self._closed_on_failure():
            pgconn.enter_pipeline_mode()
            for name, sql, params, formats in self._commands:
                if name and sql:
                    pgconn.send_prepare(name, sql)
                elif name:
                    pgconn.send_query_prepared(name, params, formats)
                else:
                    pgconn.send_query_params(sql, None)
            pgconn.pipeline_sync()

    def flush(self) -> bool:
        """Send what libpq still holds; True while some is left (wait until the socket is writable)."""
        with self._closed_on_failure():
            return bool(self.connection.pgconn.flush())

    def read(self) -> bool:
        """Take in what the server has answered so far, without waiting; True once every answer is in
        (the connection has left pipeline mode), False to wait until the socket is readable."""
        pgconn = self.connection.pgconn
        with self._closed_on_failure():
            consumed = False
            while True:
                # what libpq holds already first: a backend terminated while idle left its FATAL in the
                # buffer, then closed; reading the socket first would raise on the close and lose it
                while not pgconn.is_busy():
                    result = pgconn.get_result()
                    if result is None:
                        continue  # the end of one statement's results
                    if result.status == pq.ExecStatus.PIPELINE_SYNC:
                        pgconn.exit_pipeline_mode()
                        self.answered = True
                        return True
                    self._answers.append(result)
                    if len(self._answers) == 1 and result.status == pq.ExecStatus.FATAL_ERROR:
                        self.refused = True
                if consumed:
                    return False
                pgconn.consume_input()
                consumed = True

    @contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:  # a cancelled wait included: the pipeline is left half-way
            self.connection.pgconn.finish()  # never leave it so for the next user
            raise

    def results(self) -> list[Any]:
        """Once :meth:`read` said every answer is in: the results of the statements, in their order (Parse
        steps left out), or the first failure raised as psycopg's exception for its SQLSTATE."""
        failed = None
        results = []
        for (name, sql, _, _), result in zip(self._commands, self._answers, strict=True):
            if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED):
                if failed is None and result.status == pq.ExecStatus.FATAL_ERROR:
                    failed = result
            elif name and sql:
                self._prepared.add(name)
            if not (name and sql):
                results.append(result)
        if failed is not None:
            raise psycopg.errors.error_from_result(failed, encoding=self.connection.info.encoding)
        return results
