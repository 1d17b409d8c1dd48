"""Domain errors. Each carries a code; the FHIR API renders them once as an OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class IssueCode(StrEnum):
    """FHIR issue-type codes: https://hl7.org/fhir/R4/valueset-issue-type.html"""

    INVALID = "invalid"
    STRUCTURE = "structure"
    REQUIRED = "required"
    VALUE = "value"
    INVARIANT = "invariant"
    NOT_FOUND = "not-found"
    DELETED = "deleted"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"
    MULTIPLE_MATCHES = "multiple-matches"
    NOT_SUPPORTED = "not-supported"
    TOO_COSTLY = "too-costly"
    TOO_LONG = "too-long"
    PROCESSING = "processing"
    SECURITY = "security"
    FORBIDDEN = "forbidden"
    EXCEPTION = "exception"
    INFORMATIONAL = "informational"


@dataclass(frozen=True, slots=True)
class Issue:
    code: IssueCode
    diagnostics: str
    expression: str | None = None
    severity: str = "error"

    def to_fhir(self) -> dict[str, object]:
        issue: dict[str, object] = {
            "severity": self.severity,
            "code": self.code.value,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


class GarrisonError(Exception):
    """Base of every error a caller can cause. `status` is the HTTP status the API answers with."""

    status: int = 400
    code: IssueCode = IssueCode.INVALID

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue(self.code, message)]

    def operation_outcome(self) -> dict[str, object]:
        return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in self.issues]}


class BadRequest(GarrisonError):
    """The request is malformed (unparseable JSON, unknown parameter, bad syntax)."""


class NotFound(GarrisonError):
    """No such resource, version or type (or the caller may not know it exists)."""

    status, code = 404, IssueCode.NOT_FOUND


class Gone(GarrisonError):
    """The resource existed and was deleted."""

    status, code = 410, IssueCode.DELETED


class Conflict(GarrisonError):
    """The write conflicts with the current state (e.g. a concurrent writer won)."""

    status, code = 409, IssueCode.CONFLICT


class PreconditionFailed(GarrisonError):
    """`If-Match` named a stale version, or a conditional write matched several resources."""

    status, code = 412, IssueCode.CONFLICT


class Unprocessable(GarrisonError):
    """The resource is well-formed JSON but violates the R4 definitions."""

    status, code = 422, IssueCode.INVALID


class NotSupported(GarrisonError):
    """A FHIR feature Garrison does not implement; the CapabilityStatement says so too."""

    code = IssueCode.NOT_SUPPORTED


class MethodNotAllowed(GarrisonError):
    """The interaction is not allowed on this path."""

    status, code = 405, IssueCode.NOT_SUPPORTED


class TooCostly(GarrisonError):
    """A limit (page size, chain depth, include depth, body size) was exceeded."""

    code = IssueCode.TOO_COSTLY


class PayloadTooLarge(GarrisonError):
    """The request body exceeds the configured limit."""

    status, code = 413, IssueCode.TOO_LONG


class Unauthorized(GarrisonError):
    """No valid credentials: no token, or one that is malformed, expired or revoked."""

    status, code = 401, IssueCode.SECURITY


class Forbidden(GarrisonError):
    """The caller is known but may not do this (role, scope or policy)."""

    status, code = 403, IssueCode.FORBIDDEN


class Withheld(NotFound):
    """Answered exactly like NotFound, but the resource exists and the caller may not see it
    (another patient's, or labelled): only the audit trail tells the difference."""
