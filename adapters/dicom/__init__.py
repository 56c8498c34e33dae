"""The DICOM adapter: a pynetdicom Application Entity (SCP for Verification, Storage, Query/Retrieve,
Modality Worklist, MPPS and Storage Commitment; SCU for C-MOVE/C-GET sub-operations, forwarding and
N-EVENT-REPORT). It turns DIMSE messages into calls on the ``pacs`` port and renders the outcomes as
DIMSE statuses; business rules live in services/pacs. pynetdicom is imported nowhere else.
"""
