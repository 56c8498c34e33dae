"""Conduit's exception tree. Transports map each class to their protocol's answer
(HTTP status + OperationOutcome, ACK code + ERR, DICOM status).

    ConduitError
    ├── ConfigurationError        bad or unsafe settings, channel or mapping files (never at request time)
    ├── StoreUnavailable          the database cannot be reached: no positive acknowledgement
    └── ProcessingError           a request or message that cannot be handled as given
        ├── InvalidInput          malformed bytes, JSON, HL7 or DICOM; invalid element values  (400 / AR / 0xA900)
        ├── NotFound              no such resource / message                                    (404)
        ├── Gone                  the resource was deleted                                      (410)
        ├── Conflict              version conflicts, duplicate business identifiers             (409)
        ├── PreconditionFailed    If-Match on a stale version, ambiguous conditional match     (412)
        ├── NotSupported          a valid request for something not implemented                 (400/405/406)
        └── MappingError          a message that a mapping cannot turn into records            (AE + ERR)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ConduitError",
    "ConfigurationError",
    "StoreUnavailable",
    "ProcessingError",
    "InvalidInput",
    "NotFound",
    "Gone",
    "Conflict",
    "PreconditionFailed",
    "NotSupported",
    "MappingError",
    "Issue",
]


@dataclass(frozen=True)
class Issue:
    """One problem, located in the standard's own terms.

    ``location`` is a FHIR element path (``Patient.name[0].given``), an HL7 v2 position (``PID-3.1``,
    ``OBX[2]-5``) or a DICOM tag keyword; ``code`` is the FHIR issue-type code (``invalid``, ``not-found``,
    ``processing``...); ``severity`` is ``error``, ``warning`` or ``information``.
    """

    message: str
    location: str | None = None
    code: str = "invalid"
    severity: str = "error"


class ConduitError(Exception):
    pass


class ConfigurationError(ConduitError):
    pass


class StoreUnavailable(ConduitError):
    pass


@dataclass(eq=False)
class ProcessingError(ConduitError):
    message: str
    issues: list[Issue] = field(default_factory=list)
    status: int = 400
    code: str = "processing"

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            self.issues = [Issue(self.message, code=self.code)]

    def __str__(self) -> str:
        return self.message


class InvalidInput(ProcessingError):
    def __init__(self, message: str, issues: list[Issue] | None = None, location: str | None = None):
        super().__init__(message, issues or [Issue(message, location=location)], 400, "invalid")


class NotFound(ProcessingError):
    def __init__(self, message: str):
        super().__init__(message, [Issue(message, code="not-found")], 404, "not-found")


class Gone(ProcessingError):
    def __init__(self, message: str):
        super().__init__(message, [Issue(message, code="deleted")], 410, "deleted")


class Conflict(ProcessingError):
    def __init__(self, message: str):
        super().__init__(message, [Issue(message, code="conflict")], 409, "conflict")


class PreconditionFailed(ProcessingError):
    def __init__(self, message: str):
        super().__init__(message, [Issue(message, code="conflict")], 412, "conflict")


class NotSupported(ProcessingError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message, [Issue(message, code="not-supported")], status, "not-supported")


class MappingError(ProcessingError):
    def __init__(self, message: str, issues: list[Issue] | None = None, location: str | None = None):
        super().__init__(message, issues or [Issue(message, location=location)], 422, "processing")
