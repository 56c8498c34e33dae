"""The ``pacs`` port: everything the DICOM adapter asks of the PACS, in DICOM's own terms.

The adapter calls these from pynetdicom's association threads (they are synchronous and thread-safe) and
renders the returned statuses and datasets as DIMSE responses. Datasets are pydicom ``Dataset`` objects;
stored objects travel as Part 10 bytes.

=============================  ==============================================================
method                         DIMSE service
=============================  ==============================================================
``store(data, ...)``           C-STORE SCP (PS3.4 B.2): StoreOutcome.status
``find(model, identifier)``    C-FIND SCP (C.4.1): iterator of (status, identifier)
``retrieve(model, ident.)``    C-MOVE/C-GET SCP (C.4.2/C.4.3): list of InstanceRef
``read(ref)``                  the stored Part 10 bytes of one instance (sub-operations)
``worklist(identifier)``       Modality Worklist C-FIND (K.6): iterator of (status, identifier)
``mpps_create / mpps_set``     MPPS N-CREATE / N-SET (F.7): (status, attributes)
``commitment(...)``            Storage Commitment N-ACTION (J.3): the N-EVENT-REPORT content
``claim_forwards / ...``       the durable auto-forward queue worked by the adapter's SCU
=============================  ==============================================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from engine.db import Database, UnitOfWork
from engine.errors import ConfigurationError
from services.pacs import status
from services.pacs.commitment import CommitmentReport, evaluate_commitment
from services.pacs.forward import ForwardJob, claim_jobs, finish_job
from services.pacs.imaging_study import sync_dirty_studies
from services.pacs.mpps import MppsService
from services.pacs.query import FindQuery, QueryError, run_find
from services.pacs.retrieve import InstanceRef, select_instances
from services.pacs.settings import PacsSettings
from services.pacs.storage import InstanceStorage
from services.pacs.store import StoreOutcome, StoreService
from services.pacs.worklist import run_worklist_find, worklist_items

__all__ = ["Pacs", "RetrieveOutcome"]


@dataclass
class RetrieveOutcome:
    status: int
    instances: list[InstanceRef] = field(default_factory=list)
    comment: str = ""


class Pacs:
    def __init__(
        self,
        db: Database,
        storage: InstanceStorage,
        settings: PacsSettings,
        records: Callable[[UnitOfWork], Any] | None = None,
    ) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.records = records
        """The record-store factory (``runtime.records``); None when no record store is installed."""
        self.store_service = StoreService(db, storage, settings)
        self.mpps = MppsService(db, self._records, settings.patient_id_system)
        self._first_seen_dirty: dict[int, float] = {}
        self._last_store = -math.inf  # time.monotonic() of the latest C-STORE

    def _records(self, uow: UnitOfWork) -> Any:
        if self.records is None:
            raise ConfigurationError("the PACS needs the record store for worklist, MPPS and ImagingStudy")
        return self.records(uow)

    # C-STORE -----------------------------------------------------------------------------------------
    def store(
        self,
        data: bytes | memoryview,
        *,
        calling_ae: str = "",
        sop_instance_uid: str | None = None,
        sop_class_uid: str | None = None,
    ) -> StoreOutcome:
        self._last_store = time.monotonic()
        return self.store_service.store(
            data,
            calling_ae=calling_ae,
            expected_sop_instance_uid=sop_instance_uid,
            expected_sop_class_uid=sop_class_uid,
        )

    # C-FIND ------------------------------------------------------------------------------------------
    def find(
        self,
        model: str,
        identifier: Dataset,
        is_cancelled: Callable[[], bool] = lambda: False,
        retrieve_ae_title: str = "",
    ) -> Iterator[tuple[int, Dataset | None]]:
        """``model`` is ``patient`` or ``study`` (the root of the information model);
        ``retrieve_ae_title`` answers a requested RetrieveAETitle (0008,0054)."""
        return run_find(
            self.db,
            FindQuery(model, identifier),
            case_insensitive=self.settings.case_insensitive_names,
            limit=self.settings.max_find_results,
            is_cancelled=is_cancelled,
            retrieve_ae_title=retrieve_ae_title,
        )

    # C-MOVE / C-GET ----------------------------------------------------------------------------------
    def retrieve(self, model: str, identifier: Dataset) -> RetrieveOutcome:
        try:
            refs = select_instances(
                self.db, FindQuery(model, identifier), case_insensitive=self.settings.case_insensitive_names
            )
        except QueryError as exc:
            return RetrieveOutcome(exc.status, [], exc.comment)
        return RetrieveOutcome(status.SUCCESS, refs)

    def read(self, ref: InstanceRef) -> bytes:
        with self.storage.open(ref.storage_key) as fh:
            return fh.read()

    # Modality Worklist -------------------------------------------------------------------------------
    def worklist(
        self, identifier: Dataset, is_cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[int, Dataset | None]]:
        def items() -> list[Dataset]:
            with self.db.unit_of_work() as uow:
                return worklist_items(self._records(uow), self.settings)

        return run_worklist_find(items, identifier, self.settings, is_cancelled)

    # MPPS --------------------------------------------------------------------------------------------
    def mpps_create(self, sop_instance_uid: str, attributes: Dataset) -> tuple[int, Dataset | None]:
        return self.mpps.create(sop_instance_uid, attributes)

    def mpps_set(self, sop_instance_uid: str, modifications: Dataset) -> tuple[int, Dataset | None]:
        return self.mpps.set(sop_instance_uid, modifications)

    # Storage Commitment ------------------------------------------------------------------------------
    def commitment(self, request: Dataset) -> CommitmentReport | None:
        return evaluate_commitment(self.db, self.storage, request)

    # ImagingStudy ------------------------------------------------------------------------------------
    def sync_imaging_studies(self, limit: int = 50, *, quiet_seconds: float = 0.0) -> int:
        """One pass of the ImagingStudy sync; returns the number of studies written. ``quiet_seconds``:
        only studies that received nothing for that long (or waited too long already) are written."""
        if self.records is None or not self.settings.imaging_study_sync:
            return 0
        if time.monotonic() - self._last_store < quiet_seconds:
            # objects are still arriving (any study): the sync would compete with C-STORE for the GIL
            # and the disk, so only studies past max_delay are written until the stream pauses
            quiet_seconds = math.inf
        return sync_dirty_studies(
            self.db,
            self.records,
            patient_id_system=self.settings.patient_id_system,
            limit=limit,
            quiet_seconds=quiet_seconds,
            max_delay=self.settings.imaging_study_max_delay,
            first_seen=self._first_seen_dirty,
            mapping=self.settings.imaging_study_mapping,
        )

    # Auto-forward queue ------------------------------------------------------------------------------
    def claim_forwards(self, limit: int = 20) -> list[ForwardJob]:
        return claim_jobs(self.db, limit)

    def finish_forward(self, job_id: int, *, ok: bool, error: str = "", retry: bool = True) -> None:
        finish_job(
            self.db,
            job_id,
            ok=ok,
            error=error,
            retry=retry,
            max_attempts=self.settings.forward_max_attempts,
            first_delay=self.settings.forward_retry_seconds,
        )
