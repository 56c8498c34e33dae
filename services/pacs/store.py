"""C-STORE as a service: validate, write the object durably, index it, then (and only then) succeed.

The received bytes are stored unchanged (the adapter passes ``encoded_dataset()`` with its file meta),
so every transfer syntax is kept exactly as the modality sent it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import delete

from engine.db import Database
from engine.db.direct import read_row
from engine.errors import InvalidInput
from engine.events import INSTANCE_STORED, InstanceEvent
from services.pacs import status
from services.pacs.group_commit import GroupCommitter
from services.pacs.header import InstanceHeader, parse_header
from services.pacs.index import IndexEntry, IndexResult, SeriesKeys, write_entries
from services.pacs.logs import log_failure
from services.pacs.models import PacsInstance
from services.pacs.settings import PacsSettings
from services.pacs.storage import InstanceStorage, KeyLocks, storage_key
from services.pacs.tx import write_core, write_uow

__all__ = ["StoreOutcome", "StoreService"]

# The duplicate check runs once per C-STORE, before anything is written. Straight on the DBAPI cursor
# (~20 us) rather than through SQLAlchemy's execution machinery (~150 us): two plain columns, no types
# to process. The placeholder follows the driver's paramstyle (sqlite3: qmark, psycopg: format).
_STORED_SQL = "SELECT storage_key, size FROM pacs_instance WHERE sop_instance_uid = {}"  # PacsInstance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    comment: str = ""
    sop_instance_uid: str | None = None
    duplicate: bool = False


class StoreService:
    def __init__(self, db: Database, storage: InstanceStorage, settings: PacsSettings) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self._committer: GroupCommitter[IndexEntry, IndexResult] = GroupCommitter(self._commit)
        self._known_series: dict[str, SeriesKeys] = {}
        # one thread per concurrent store: each waits in the group committer, whose batches should gather
        # every association's row, not just a few
        self._index = ThreadPoolExecutor(max_workers=64, thread_name_prefix="pacs-index")
        self._instances = KeyLocks()  # by SOP Instance UID
        self._stored_sql = _STORED_SQL.format("?" if db.engine.dialect.paramstyle == "qmark" else "%s")

    def _commit(self, entries: Sequence[IndexEntry]) -> list[IndexResult]:
        with write_core(self.db) as work:
            results = write_entries(work.conn, entries, self._known_series)
            for entry, result in zip(entries, results, strict=True):
                h = entry.header
                work.defer(
                    InstanceEvent(
                        INSTANCE_STORED,
                        sop_instance_uid=h.sop_instance_uid,
                        study_instance_uid=h.study_instance_uid,
                        extra={
                            "created": result.created,
                            "modality": h.modality,
                            "calling_ae": entry.calling_ae,
                        },
                    )
                )
        # only committed rows may serve the fast path (a rolled-back series row never existed)
        if len(self._known_series) > 100_000:
            self._known_series.clear()
        for entry, result in zip(entries, results, strict=True):
            if result.series is not None:
                self._known_series[entry.header.series_instance_uid] = result.series
        return results

    def _unindex(self, sop_instance_uid: str) -> None:
        try:
            with write_uow(self.db) as uow:
                uow.session.execute(
                    delete(PacsInstance).where(PacsInstance.sop_instance_uid == sop_instance_uid)
                )
        except Exception:
            log_failure(log, "could not take back the index row of an unwritten instance")

    def _existing(self, sop_instance_uid: str) -> tuple[str, int] | None:
        row = read_row(self.db.engine, self._stored_sql, (sop_instance_uid,))
        return (str(row[0]), int(row[1])) if row else None

    def forward_destinations(self, header: InstanceHeader, calling_ae: str) -> tuple[str, ...]:
        found: list[str] = []
        for rule in self.settings.forward_rules:
            if rule.destination not in found and rule.matches(
                modality=header.modality, calling_ae=calling_ae, sop_class_uid=header.sop_class_uid
            ):
                found.append(rule.destination)
        return tuple(found)

    def store(
        self,
        data: bytes | memoryview,
        *,
        calling_ae: str = "",
        expected_sop_instance_uid: str | None = None,
        expected_sop_class_uid: str | None = None,
    ) -> StoreOutcome:
        """Store one Part 10 object; the returned status is Success only once file and index are durable."""
        try:
            header = parse_header(data)
        except InvalidInput as exc:
            log.warning("C-STORE from %s refused: %s", calling_ae, exc)
            return StoreOutcome(status.CANNOT_UNDERSTAND, str(exc))
        if expected_sop_instance_uid and header.sop_instance_uid != expected_sop_instance_uid.rstrip("\x00 "):
            return StoreOutcome(
                status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOPInstanceUID differs from the request's Affected SOP Instance UID",
            )
        if expected_sop_class_uid and header.sop_class_uid != expected_sop_class_uid.rstrip("\x00 "):
            return StoreOutcome(
                status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOPClassUID differs from the request's Affected SOP Class UID",
            )
        # one store of an instance at a time, from its duplicate check until its row is final: a failed
        # store takes its new row back, which must never be the row a concurrent resend just committed
        self._instances.acquire(header.sop_instance_uid)
        try:
            return self._store(data, header, calling_ae)
        finally:
            self._instances.release(header.sop_instance_uid)

    def _store(self, data: bytes | memoryview, header: InstanceHeader, calling_ae: str) -> StoreOutcome:
        policy = self.settings.duplicate_policy
        existing = self._existing(header.sop_instance_uid)
        # an index row whose file is missing or short (a crash between the two) is healed by the resend
        healing = existing is not None and self.storage.size(existing[0]) != existing[1]
        if policy != "overwrite" and existing is not None and not healing:
            if policy == "reject":
                return StoreOutcome(
                    status.DUPLICATE_SOP_INSTANCE,
                    "an instance with this SOP Instance UID is already stored",
                    header.sop_instance_uid,
                    duplicate=True,
                )
            return StoreOutcome(status.SUCCESS, "", header.sop_instance_uid, duplicate=True)

        key = storage_key(header.study_instance_uid, header.sop_instance_uid)
        entry = IndexEntry(
            header=header,
            storage_key=key,
            size=len(data),
            calling_ae=calling_ae[:16],
            overwrite=policy == "overwrite" or healing,
            forward_to=self.forward_destinations(header, calling_ae),
        )
        # The file (fsync of file and folder) and the index row (commit) are made durable side by side:
        # each costs a disk flush, and Success waits for both. Should the file fail, the new row is taken
        # back; should the process die in between, the SCU never saw Success and its resend heals it.
        # The commit (Python, holding the GIL much of the time) goes to another thread once the file is
        # open and its bytes staged, right before this thread waits for the disk (releasing the GIL):
        # started earlier, its Python work delayed this thread's own file opening and copying (~0.1-0.5
        # ms an image); a file write handed to a pool thread instead started only once this thread next
        # blocked (~0.5 ms later).
        started: list[Future[IndexResult]] = []

        def start_commit() -> None:
            if not started:
                started.append(self._index.submit(self._committer.submit, entry))

        try:
            prepared = self.storage.prepare(key, data, start_commit)
        except Exception as exc:  # any failure: a row committed meanwhile must not point at no file
            log.error("cannot write instance file: %s", exc.__class__.__name__)
            result = _result_quietly(started[0]) if started else None
            if result is not None and result.created:
                self._unindex(header.sop_instance_uid)
            return StoreOutcome(status.OUT_OF_RESOURCES, "cannot write the object to storage")
        try:
            start_commit()  # a storage that did not call it
        except Exception as exc:  # the commit pool refused it (shutting down)
            prepared.discard()
            log.error("cannot index instance: %s", exc.__class__.__name__)
            return StoreOutcome(status.OUT_OF_RESOURCES, "cannot record the object in the index")
        committed = started[0]
        try:
            result = committed.result()
        except Exception as exc:
            # a new file may stay behind: harmless (a retry rewrites it), and never indexed, so never
            # served; a copy prepared to replace a stored one is dropped, the stored one stays as it was
            prepared.discard()
            log.error("cannot index instance: %s", exc.__class__.__name__)
            return StoreOutcome(status.OUT_OF_RESOURCES, "cannot record the object in the index")
        try:
            prepared.publish()
        except OSError as exc:
            log.error("cannot write instance file: %s", exc.__class__.__name__)
            if result.created:
                self._unindex(header.sop_instance_uid)
            return StoreOutcome(status.OUT_OF_RESOURCES, "cannot write the object to storage")
        if result.replaced_key and result.replaced_key != key:
            self.storage.delete(result.replaced_key)
        return StoreOutcome(status.SUCCESS, "", header.sop_instance_uid, duplicate=not result.created)


def _result_quietly(future: Future[IndexResult]) -> IndexResult | None:
    try:
        return future.result()
    except Exception:
        return None
