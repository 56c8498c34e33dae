"""``install(runtime)``: provide the ``pacs`` port and its background ImagingStudy sync."""

from __future__ import annotations

import asyncio
import logging
import threading

from engine.runtime import Runtime
from services.pacs.imaging_study import check_imaging_study_mapping
from services.pacs.logs import log_failure
from services.pacs.port import Pacs
from services.pacs.settings import PacsSettings
from services.pacs.storage import FilesystemStorage

__all__ = ["install"]

log = logging.getLogger(__name__)

#: seconds between ImagingStudy sync passes: instances arriving meanwhile coalesce into one update
SYNC_INTERVAL = 0.5


def _sweep(storage: FilesystemStorage) -> None:
    try:
        swept = storage.sweep_temp_files()
    except OSError as exc:
        log.warning("cannot sweep temporary instance files: %s", exc.__class__.__name__)
        return
    if swept:
        log.warning("removed %d temporary instance file(s) left by an interrupted write", swept)


def install(runtime: Runtime, settings: PacsSettings | None = None) -> Pacs:
    settings = settings or PacsSettings()
    if settings.imaging_study_sync:
        check_imaging_study_mapping(settings.imaging_study_mapping)  # a misspelt name stops the start
    storage = FilesystemStorage(runtime.settings.data_dir / "dicom", direct_io=settings.direct_io)
    # replacement copies left by a crash; one scandir pass, measured at 21 ms CPU for 10,000 files in 1,000
    # study folders and 122 ms in 10,000 (warm cache), so it runs beside the start, not before it
    threading.Thread(target=_sweep, args=(storage,), name="pacs-sweep", daemon=True).start()
    records = runtime.records if "records" in runtime.ports else None
    pacs = Pacs(runtime.db, storage, settings, records)
    runtime.provide("pacs", pacs)

    async def imaging_study_sync() -> None:
        while True:
            try:
                quiet = settings.imaging_study_quiet_seconds
                while await asyncio.to_thread(pacs.sync_imaging_studies, 50, quiet_seconds=quiet) > 0:
                    pass
            except Exception:
                log_failure(log, "ImagingStudy sync pass failed")
            await asyncio.sleep(SYNC_INTERVAL)

    if records is not None and settings.imaging_study_sync:
        runtime.background.append(imaging_study_sync)
    return pacs
