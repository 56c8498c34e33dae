"""The PACS service: stored DICOM instances, their patient/study/series/instance index, C-FIND query
engine, Modality Worklist from the record store, MPPS, storage commitment, ImagingStudy sync and
auto-forwarding rules. It owns the ``pacs_*`` tables and provides the ``pacs`` port (see ``port.py``).

No pynetdicom here: the DICOM adapter (adapters/dicom) turns DIMSE messages into calls on the port and
renders the returned statuses. pydicom is used for dataset handling.
"""
