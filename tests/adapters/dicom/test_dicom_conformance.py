"""The Conformance Statement matches the code, and the live SCP accepts every SOP class it lists."""

from __future__ import annotations

from typing import Any

from pynetdicom import AE
from pynetdicom.presentation import build_context

from adapters.dicom.contexts import SERVICES
from conformance.dicom.statement import STATEMENT_PATH, render_statement


def test_committed_statement_matches_the_code() -> None:
    assert STATEMENT_PATH.read_text() == render_statement(), (
        "conformance/dicom/conformance-statement.md is stale: run `python -m conformance.dicom.statement`"
    )


def test_every_listed_sop_class_is_accepted(scp: Any) -> None:
    # propose each listed (SOP class, transfer syntax) pair; at most 128 contexts per association
    pairs = [
        (e.sop_class_uid, ts) for e in SERVICES for ts in (e.transfer_syntaxes[0], e.transfer_syntaxes[-1])
    ]
    rejected = []
    for start in range(0, len(pairs), 128):
        ae = AE(ae_title="CONFORMANCE")
        ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in pairs[start : start + 128]]
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
        assert assoc.is_established
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        rejected += [p for p in pairs[start : start + 128] if p not in accepted]
        assoc.release()
    assert rejected == []
