"""Storage Commitment Push Model (PS3.4 J.3): which referenced instances we hold durably.

An instance is committed when its index row is committed and its file is present with the indexed size
(Success for its C-STORE was only ever sent after both were durable). Everything else goes to the FailedSOPSequence with Failure Reason 0x0112 (No
such object instance) or 0x0119 (Class-instance conflict, PS3.4 J.3.3.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

from engine.db import Database
from services.pacs.models import PacsInstance
from services.pacs.storage import InstanceStorage
from services.pacs.uids import is_valid_uid

__all__ = ["CommitmentReport", "evaluate_commitment"]

NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


@dataclass(frozen=True)
class CommitmentReport:
    transaction_uid: str
    event_type: int
    """1 = Storage Commitment Request Successful, 2 = Complete - Failures Exist."""
    dataset: Dataset
    committed: int
    failed: int


def evaluate_commitment(db: Database, storage: InstanceStorage, request: Dataset) -> CommitmentReport | None:
    """The N-EVENT-REPORT content for an N-ACTION request, or None when the request is malformed."""
    transaction_uid = str(request.get("TransactionUID", "") or "").strip()
    references = request.get("ReferencedSOPSequence")
    if not is_valid_uid(transaction_uid) or not references:
        return None
    wanted = [
        (
            str(item.get("ReferencedSOPClassUID", "") or ""),
            str(item.get("ReferencedSOPInstanceUID", "") or ""),
        )
        for item in references
    ]
    uids = [uid for _, uid in wanted if is_valid_uid(uid)]
    held: dict[str, tuple[str, str, int]] = {}
    with db.engine.connect() as conn:
        for i in range(0, len(uids), 500):
            rows = conn.execute(
                select(
                    PacsInstance.sop_instance_uid,
                    PacsInstance.sop_class_uid,
                    PacsInstance.storage_key,
                    PacsInstance.size,
                ).where(PacsInstance.sop_instance_uid.in_(uids[i : i + 500]))
            )
            held.update({uid: (cls, key, size) for uid, cls, key, size in rows})
    success, failed = Sequence([]), Sequence([])
    for sop_class, uid in wanted:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        stored = held.get(uid)
        if stored is None or storage.size(stored[1]) != stored[2]:
            item.FailureReason = NO_SUCH_OBJECT_INSTANCE
            failed.append(item)
        elif stored[0] != sop_class:
            item.FailureReason = CLASS_INSTANCE_CONFLICT
            failed.append(item)
        else:
            success.append(item)
    report = Dataset()
    report.TransactionUID = transaction_uid
    if success:
        report.ReferencedSOPSequence = success
    if failed:
        report.FailedSOPSequence = failed
    return CommitmentReport(transaction_uid, 2 if failed else 1, report, len(success), len(failed))
