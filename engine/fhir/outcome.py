"""OperationOutcome JSON (FHIR R4 §2.36) built from :class:`engine.errors.Issue` lists and errors.

Transports render these; nothing here knows about HTTP. Messages must not carry patient data because the
same text is logged: builders of Issues name the element and the rule, never the offending value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.errors import Issue, ProcessingError

__all__ = ["operation_outcome", "outcome_for_error", "information_outcome", "has_errors"]

#: Issue.code values allowed by the IssueType value set (http://hl7.org/fhir/issue-type); anything else
#: is reported as "processing" so the outcome stays valid.
ISSUE_TYPES = frozenset(
    """invalid structure required value invariant security login unknown expired forbidden suppressed
    processing not-supported duplicate multiple-matches not-found deleted too-long code-invalid extension
    too-costly business-rule conflict transient lock-error no-store exception timeout incomplete throttled
    informational""".split()
)
SEVERITIES = frozenset({"fatal", "error", "warning", "information"})


def _issue_json(issue: Issue) -> dict[str, Any]:
    out: dict[str, Any] = {
        "severity": issue.severity if issue.severity in SEVERITIES else "error",
        "code": issue.code if issue.code in ISSUE_TYPES else "processing",
        "diagnostics": issue.message,
    }
    if issue.location:
        # R4 keeps both: `expression` (FHIRPath) is preferred, `location` is the deprecated XPath-ish slot
        # older clients still read.
        out["expression"] = [issue.location]
        out["location"] = [issue.location]
    return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource for ``issues`` (at least one issue is always present)."""
    rendered = [_issue_json(i) for i in issues]
    if not rendered:
        rendered = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    return {"resourceType": "OperationOutcome", "issue": rendered}


def outcome_for_error(error: ProcessingError) -> dict[str, Any]:
    return operation_outcome(error.issues)


def information_outcome(message: str) -> dict[str, Any]:
    return operation_outcome([Issue(message, code="informational", severity="information")])


def has_errors(issues: Iterable[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)
