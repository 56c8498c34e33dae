"""The presentation contexts the SCP accepts: the single source for the association negotiation and for
the generated DICOM Conformance Statement (conformance/dicom)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, DEFAULT_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

__all__ = [
    "ServiceEntry",
    "SERVICES",
    "STORAGE_TRANSFER_SYNTAXES",
    "supported_contexts",
    "contexts_for",
    "QR_MODEL",
]

#: every transfer syntax pynetdicom can negotiate: objects are stored as received, never transcoded, so
#: compressed syntaxes (deflate, JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE) are as welcome as native
STORAGE_TRANSFER_SYNTAXES: list[str] = [str(ts) for ts in ALL_TRANSFER_SYNTAXES]
#: query and management messages: the uncompressed syntaxes (plus deflate)
NON_STORAGE_TRANSFER_SYNTAXES: list[str] = [str(ts) for ts in DEFAULT_TRANSFER_SYNTAXES]


@dataclass(frozen=True)
class ServiceEntry:
    """One SOP class we offer, with its role and the standard section that defines the service."""

    sop_class_uid: str
    name: str
    service: str
    role: str
    reference: str
    transfer_syntaxes: tuple[str, ...]


#: Query/Retrieve SOP class -> information model root for the pacs port
QR_MODEL: dict[str, str] = {
    str(PatientRootQueryRetrieveInformationModelFind): "patient",
    str(StudyRootQueryRetrieveInformationModelFind): "study",
    str(PatientRootQueryRetrieveInformationModelMove): "patient",
    str(StudyRootQueryRetrieveInformationModelMove): "study",
    str(PatientRootQueryRetrieveInformationModelGet): "patient",
    str(StudyRootQueryRetrieveInformationModelGet): "study",
}


def _entries() -> list[ServiceEntry]:
    nonstorage = tuple(NON_STORAGE_TRANSFER_SYNTAXES)
    rows = [ServiceEntry(str(Verification), Verification.name, "Verification", "SCP", "PS3.4 A", nonstorage)]
    for uid, service, ref in (
        (PatientRootQueryRetrieveInformationModelFind, "Query/Retrieve C-FIND", "PS3.4 C.4.1"),
        (StudyRootQueryRetrieveInformationModelFind, "Query/Retrieve C-FIND", "PS3.4 C.4.1"),
        (PatientRootQueryRetrieveInformationModelMove, "Query/Retrieve C-MOVE", "PS3.4 C.4.2"),
        (StudyRootQueryRetrieveInformationModelMove, "Query/Retrieve C-MOVE", "PS3.4 C.4.2"),
        (PatientRootQueryRetrieveInformationModelGet, "Query/Retrieve C-GET", "PS3.4 C.4.3"),
        (StudyRootQueryRetrieveInformationModelGet, "Query/Retrieve C-GET", "PS3.4 C.4.3"),
        (ModalityWorklistInformationFind, "Basic Worklist Management", "PS3.4 K.6"),
        (ModalityPerformedProcedureStep, "Modality Performed Procedure Step", "PS3.4 F.7"),
        (StorageCommitmentPushModel, "Storage Commitment Push Model", "PS3.4 J.3"),
    ):
        rows.append(ServiceEntry(str(uid), uid.name, service, "SCP", ref, nonstorage))
    for cx in AllStoragePresentationContexts:
        uid = cx.abstract_syntax
        assert uid is not None
        rows.append(
            ServiceEntry(
                str(uid),
                uid.name,
                "Storage",
                "SCP (and SCU for C-MOVE/C-GET)",
                "PS3.4 B",
                tuple(STORAGE_TRANSFER_SYNTAXES),
            )
        )
    return rows


SERVICES: list[ServiceEntry] = _entries()


def supported_contexts() -> list[PresentationContext]:
    """Fresh PresentationContext objects for the AE (storage contexts accept the C-GET SCP role)."""
    contexts = []
    for entry in SERVICES:
        cx = build_context(entry.sop_class_uid, list(entry.transfer_syntaxes))
        if entry.service == "Storage":
            # a C-GET requestor proposes to be the Storage SCP on the same association (PS3.4 C.4.3.1.1)
            cx.scu_role = True
            cx.scp_role = True
        contexts.append(cx)
    return contexts


def contexts_for(objects: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts to propose for sending ``(SOP class, transfer syntax)`` objects: one per SOP class with
    the stored syntaxes first, then the uncompressed ones (at most 128, PS3.8 9.3.2.2)."""
    by_class: dict[str, list[str]] = {}
    for sop_class, transfer_syntax in objects:
        syntaxes = by_class.setdefault(sop_class, [])
        if transfer_syntax not in syntaxes:
            syntaxes.append(transfer_syntax)
    contexts = []
    for sop_class, syntaxes in list(by_class.items())[:128]:
        for ts in (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)):
            if ts not in syntaxes:
                syntaxes.append(ts)
        contexts.append(build_context(sop_class, syntaxes))
    return contexts
