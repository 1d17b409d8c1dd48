"""What each structured action name means in FHIR AuditEvent terms, in Python and in SQL.

Action names are `<area>:<object>:<verb>` (`patient:record:read`, `user:session:login_failed`).
A few names have their own meaning (sign-in, break-the-glass, privilege changes); every other
name is classified by its last segment, the verb. The same table drives the AuditEvent built for a
row (`classify`) and the SQL that searches rows by type, subtype or action (`names_where`), so a
search finds exactly the events whose resource shows the code searched for.

Codes follow IHE Basic Audit Log Patterns (BALP) and the R4 AuditEvent value sets:
- RESTful interactions: type `rest` (http://terminology.hl7.org/CodeSystem/audit-event-type) with
  a subtype from http://hl7.org/fhir/restful-interaction;
- sign-in and sign-out: DICOM 110114 User Authentication, subtype 110122 Login / 110123 Logout;
- security events: DICOM 110113 Security Alert, subtype 110127 Emergency Override Started /
  110138 Emergency Override Stopped (break-the-glass, checklist U6), 110136 Security Roles
  Changed (privileges, checklist U4), 110137 User Security Attributes Changed (lockout, A2).
- action (http://hl7.org/fhir/audit-event-action): C create, R read/view, U update, D delete,
  E execute (search, operations, sign-in; https://hl7.org/fhir/R4/valueset-audit-event-action.html).
Every event also carries a subtype coding with its structured name (`ACTION_SYSTEM`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, func, not_, or_
from sqlalchemy.sql.elements import ColumnClause

from garrison.audit.schema import audit_log

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACTION_SYSTEM = "http://garrison.health/fhir/CodeSystem/audit-action"


@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class ActionKind:
    type: Code
    subtype: Code | None  # the standard subtype; the structured name is always added as well
    crude: str  # C R U D E
    description: str  # plain words for the accounting of disclosures


REST = Code(AUDIT_EVENT_TYPE, "rest", "Restful Operation")
USER_AUTHENTICATION = Code(DCM, "110114", "User Authentication")
SECURITY_ALERT = Code(DCM, "110113", "Security Alert")
APPLICATION_ACTIVITY = Code(DCM, "110100", "Application Activity")
LOGIN = Code(DCM, "110122", "Login")
LOGOUT = Code(DCM, "110123", "Logout")
EMERGENCY_OVERRIDE_STARTED = Code(DCM, "110127", "Emergency Override Started")
EMERGENCY_OVERRIDE_STOPPED = Code(DCM, "110138", "Emergency Override Stopped")
SECURITY_ROLES_CHANGED = Code(DCM, "110136", "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = Code(DCM, "110137", "User Security Attributes Changed")


def _rest(interaction: str, crude: str, description: str) -> ActionKind:
    return ActionKind(REST, Code(RESTFUL_INTERACTION, interaction, interaction), crude, description)


# Names with a meaning of their own (matched exactly, before the verb rules).
EXACT: dict[str, ActionKind] = {
    "user:session:login": ActionKind(USER_AUTHENTICATION, LOGIN, "E", "signed in"),
    "user:session:login_failed": ActionKind(USER_AUTHENTICATION, LOGIN, "E", "failed to sign in"),
    "user:session:logout": ActionKind(USER_AUTHENTICATION, LOGOUT, "E", "signed out"),
    "user:session:expired": ActionKind(USER_AUTHENTICATION, LOGOUT, "E", "session expired"),
    "user:account:locked": ActionKind(
        SECURITY_ALERT, USER_SECURITY_ATTRIBUTES_CHANGED, "U", "account locked"
    ),
    "user:account:unlocked": ActionKind(
        SECURITY_ALERT, USER_SECURITY_ATTRIBUTES_CHANGED, "U", "account unlocked"
    ),
    "user:privilege:grant": ActionKind(SECURITY_ALERT, SECURITY_ROLES_CHANGED, "U", "privilege granted"),
    "user:privilege:revoke": ActionKind(SECURITY_ALERT, SECURITY_ROLES_CHANGED, "U", "privilege revoked"),
    "patient:break_glass:start": ActionKind(
        SECURITY_ALERT, EMERGENCY_OVERRIDE_STARTED, "E", "emergency access (break-the-glass) started"
    ),
    "patient:break_glass:stop": ActionKind(
        SECURITY_ALERT, EMERGENCY_OVERRIDE_STOPPED, "E", "emergency access (break-the-glass) ended"
    ),
    "oauth:token:issued": ActionKind(USER_AUTHENTICATION, None, "E", "access token issued"),
    "oauth:token:revoked": ActionKind(USER_AUTHENTICATION, None, "E", "access token revoked"),
}

# The last segment of any other name (https://hl7.org/fhir/R4/codesystem-restful-interaction.html).
VERBS: dict[str, ActionKind] = {
    "read": _rest("read", "R", "viewed"),
    "vread": _rest("vread", "R", "viewed a version"),
    "history": _rest("history-instance", "R", "viewed the history"),
    "search": _rest("search-type", "E", "searched"),
    "create": _rest("create", "C", "created"),
    "update": _rest("update", "U", "updated"),
    "patch": _rest("patch", "U", "updated"),
    "delete": _rest("delete", "D", "deleted"),
    "everything": _rest("operation", "E", "retrieved the whole record"),
    "export": _rest("operation", "E", "exported"),
    "operation": _rest("operation", "E", "ran an operation on"),
    "print": _rest("operation", "E", "printed"),
    "transaction": _rest("transaction", "E", "submitted a transaction"),
    "batch": _rest("batch", "E", "submitted a batch"),
}

FALLBACK = ActionKind(APPLICATION_ACTIVITY, None, "E", "other activity")


def verb_of(action: str) -> str:
    return action.rsplit(":", 1)[-1].lower()


def classify(action: str) -> ActionKind:
    """The AuditEvent meaning of a structured action name."""
    exact = EXACT.get(action)
    if exact is not None:
        return exact
    return VERBS.get(verb_of(action), FALLBACK)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_verb(column: ColumnClause[str], verb: str) -> ColumnElement[bool]:
    # Same rule as verb_of: the text after the last ':' (or the whole name), case-insensitively.
    lowered = func.lower(column)
    return or_(lowered == verb, lowered.like(f"%:{_escape_like(verb)}", escape="\\"))


def names_where(wanted: Callable[[ActionKind], bool]) -> ColumnElement[bool]:
    """SQL true for the rows whose action name `classify`s to a kind that `wanted` accepts."""
    column = audit_log.c.action
    exact = [name for name, kind in EXACT.items() if wanted(kind)]
    verbs = [verb for verb, kind in VERBS.items() if wanted(kind)]
    not_exact = column.not_in(list(EXACT))
    parts: list[ColumnElement[bool]] = []
    if exact:
        parts.append(column.in_(exact))
    if verbs:
        parts.append(and_(not_exact, or_(*(_has_verb(column, v) for v in verbs))))
    if wanted(FALLBACK):
        parts.append(and_(not_exact, not_(or_(*(_has_verb(column, v) for v in VERBS)))))
    return or_(*parts) if parts else false()
