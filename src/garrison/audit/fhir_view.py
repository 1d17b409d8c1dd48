"""The audit log, read-only, as FHIR R4 AuditEvent resources (checklist U1, U5; goal 8).

Each row becomes one AuditEvent whose id is the row's seq. The shape follows IHE Basic Audit Log
Patterns (BALP): the requesting user or client is the agent with `requestor = true` (who, role,
network address, the session or token id as `policy`), Garrison is the observer, the patient is an
entity with role 1 (Patient) and every other reference touched is an entity with role 4 (Domain
Resource); a search's query is an entity with role 24 (Query). See `garrison.audit.actions` for
type, subtype and action. Search implements the AuditEvent parameters listed in `SEARCH_PARAMS`
(https://hl7.org/fhir/R4/auditevent.html#search).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, and_, case, false, func, or_, select, true
from sqlalchemy.sql.elements import ColumnClause

from garrison import clock
from garrison.audit.actions import ACTION_SYSTEM, ActionKind, classify, names_where
from garrison.audit.chain import AuditRow, decode_row
from garrison.audit.schema import audit_log
from garrison.errors import BadRequest
from garrison.fhir.search.parse import split_unescaped, unescape
from garrison.fhir.search.predicates import MatchContext, date_match, parse_date

ACTOR_SYSTEM = "http://garrison.health/fhir/sid/actor"  # actors that are not FHIR resources
SOURCE_SYSTEM = "http://garrison.health/fhir/sid/client"  # client ids and job names
ROLE_SYSTEM = "http://garrison.health/fhir/CodeSystem/role"  # the access policy's role names
ACTION_CODES = "http://hl7.org/fhir/audit-event-action"
OUTCOME_CODES = "http://hl7.org/fhir/audit-event-outcome"
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"

# https://hl7.org/fhir/R4/valueset-audit-event-outcome.html
OUTCOME_CODE: dict[str, str] = {"success": "0", "denied": "4", "failed": "8"}
_PURPOSE_DISPLAY = {
    "TREAT": "treatment",
    "ETREAT": "Emergency Treatment",
    "HOPERAT": "healthcare operations",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
    "FAMRQT": "family requested",
    "PWATRNY": "power of attorney",
    "PUBHLTH": "public health",
    "HRESCH": "healthcare research",
    "HSYSADMIN": "health system administration",
    "BTG": "break the glass",
}
# Actors that are FHIR resources an AuditEvent.agent.who may refer to (R4 target profiles).
_AGENT_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "Organization", "Device")
_ID = r"[A-Za-z0-9\-.]{1,64}"
_REFERENCE = re.compile(rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?$")
_ABSOLUTE_TAIL = re.compile(rf"(?P<ref>[A-Z][A-Za-z]+/{_ID}(?:/_history/{_ID})?)$")
_PLAIN_ID = re.compile(rf"^{_ID}$")

SEARCH_PARAMS = frozenset(
    {"_id", "date", "agent", "patient", "entity", "action", "type", "subtype", "outcome", "agent-role"}
)
SORT_KEYS = frozenset({"_id", "date", "agent", "patient", "subtype", "outcome"})
# Paging is the caller's (count, offset); format parameters belong to the HTTP layer.
_IGNORED = frozenset({"_count", "_offset", "_format", "_pretty", "_total"})


# ------------------------------------------------------------------------------ resource


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _who(actor: str) -> dict[str, Any]:
    match = _REFERENCE.match(actor)
    if match and match["type"] in _AGENT_TYPES and match["version"] is None:
        return {"reference": actor}
    return {"identifier": {"system": ACTOR_SYSTEM, "value": actor}, "display": actor}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _agents(row: AuditRow) -> list[dict[str, Any]]:
    application = row.actor.startswith(("client/", "system/"))
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                _coding(DCM, "110150", "Application")
                if application
                else _coding(SECURITY_ROLE_TYPE, "humanuser", "human user")
            ]
        },
        "who": _who(row.actor),
        "role": [{"coding": [_coding(ROLE_SYSTEM, row.role)], "text": row.role}],
        "requestor": True,
    }
    if row.session and not any(c.isspace() for c in row.session):
        agent["policy"] = [row.session]  # BALP: the session or token id the request ran under
    if row.purpose_of_use:
        agent["purposeOfUse"] = [_purpose(row.purpose_of_use)]
    agents = [agent]
    if row.source:
        if _is_ip(row.source):
            agent["network"] = {"address": row.source, "type": "2"}  # 2 = IP address
        else:
            # A client application or job the user acted through: a second, non-requesting agent.
            agents.append(
                {
                    "type": {"coding": [_coding(DCM, "110150", "Application")]},
                    "who": {
                        "identifier": {"system": SOURCE_SYSTEM, "value": row.source},
                        "display": row.source,
                    },
                    "requestor": False,
                }
            )
    return agents


def _purpose(code: str) -> dict[str, Any]:
    return {"coding": [_coding(V3_ACT_REASON, code, _PURPOSE_DISPLAY.get(code))]}


def _entities(row: AuditRow) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    patient_ref = f"Patient/{row.patient}" if row.patient else None
    if patient_ref:
        entities.append(
            {
                "what": {"reference": patient_ref},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    for reference in row.entities:
        if reference == patient_ref:
            continue
        what: dict[str, Any] = (
            {"reference": reference}
            if _REFERENCE.match(reference)
            else {"identifier": {"system": ACTOR_SYSTEM, "value": reference}}
        )
        entities.append(
            {
                "what": what,
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    detail = dict(row.detail)
    query = detail.pop("query", None)
    if isinstance(query, str) and query:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "query": base64.b64encode(query.encode()).decode("ascii"),
            }
        )
    if detail:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "4", "Other"),
                "name": "detail",
                "detail": [
                    {"type": str(key), "valueString": value if isinstance(value, str) else _json(value)}
                    for key, value in sorted(detail.items())
                ],
            }
        )
    return entities


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def audit_event(row: AuditRow) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for one audit row."""
    kind: ActionKind = classify(row.action)
    recorded = row.recorded_text
    subtype = [kind.subtype.coding()] if kind.subtype else []
    subtype.append(_coding(ACTION_SYSTEM, row.action))
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row.seq),
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": kind.type.coding(),
        "subtype": subtype,
        "action": kind.crude,
        "recorded": recorded,
        "outcome": OUTCOME_CODE[row.outcome],
    }
    reason = row.detail.get("reason")
    if row.outcome != "success" and isinstance(reason, str) and reason:
        event["outcomeDesc"] = reason
    if row.purpose_of_use:
        event["purposeOfEvent"] = [_purpose(row.purpose_of_use)]
    event["agent"] = _agents(row)
    event["source"] = {
        "site": "Garrison",
        "observer": {"display": "Garrison"},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }
    entities = _entities(row)
    if entities:
        event["entity"] = entities
    return event


def read_audit_event(connection: Connection, event_id: str) -> dict[str, Any] | None:
    """The AuditEvent with this id (a seq), or None."""
    if not event_id.isdigit() or len(event_id) > 18:
        return None
    row = connection.execute(select(audit_log).where(audit_log.c.seq == int(event_id))).first()
    return None if row is None else audit_event(decode_row(row))


# -------------------------------------------------------------------------------- search


# Case-sensitive substring tests (ids are case-sensitive; SQLite's LIKE is not).
def _contains(column: ColumnClause[str], fragment: str, dialect: str) -> ColumnElement[bool]:
    position = func.strpos if dialect == "postgresql" else func.instr
    return position(column, fragment) > 0


def _ends_with(column: ColumnClause[str], suffix: str, dialect: str) -> ColumnElement[bool]:
    tail = func.right(column, len(suffix)) if dialect == "postgresql" else func.substr(column, -len(suffix))
    return tail == suffix


def _reference_value(value: str) -> str:
    """A reference search value without this or any server's base URL."""
    if "://" in value:
        tail = _ABSOLUTE_TAIL.search(value)
        return tail["ref"] if tail else value
    return value


def _token(value: str) -> tuple[str | None, str | None]:
    """(system, code): `s|c`, `|c` (system absent: system ""), `c` (any system: None), `s|` (any code)."""
    parts = split_unescaped(value, "|")
    if len(parts) == 1:
        return None, unescape(parts[0])
    if len(parts) == 2:
        return unescape(parts[0]), unescape(parts[1]) or None
    raise BadRequest(f"{value!r} is not a valid token")


def _matches(code_system: str, code: str, system: str | None, wanted: str | None) -> bool:
    return (system is None or system == code_system) and (wanted is None or wanted == code)


def _action_condition(value: str, dialect: str) -> ColumnElement[bool]:
    system, code = _token(value)
    return names_where(lambda kind: _matches(ACTION_CODES, kind.crude, system, code))


def _type_condition(value: str, dialect: str) -> ColumnElement[bool]:
    system, code = _token(value)
    return names_where(lambda kind: _matches(kind.type.system, kind.type.code, system, code))


def _subtype_condition(value: str, dialect: str) -> ColumnElement[bool]:
    system, code = _token(value)
    standard = names_where(
        lambda kind: (
            kind.subtype is not None and _matches(kind.subtype.system, kind.subtype.code, system, code)
        )
    )
    if system not in (None, ACTION_SYSTEM):
        return standard
    return or_(standard, audit_log.c.action == code) if code is not None else true()


def _outcome_condition(value: str, dialect: str) -> ColumnElement[bool]:
    system, code = _token(value)
    names = [name for name, number in OUTCOME_CODE.items() if _matches(OUTCOME_CODES, number, system, code)]
    return audit_log.c.outcome.in_(names) if names else false()


def _role_condition(value: str, dialect: str) -> ColumnElement[bool]:
    system, code = _token(value)
    if system not in (None, ROLE_SYSTEM):
        return false()
    return audit_log.c.role == code if code is not None else true()


def _agent_condition(value: str, dialect: str) -> ColumnElement[bool]:
    reference = _reference_value(value)
    if "/" in reference:
        return audit_log.c.actor == reference
    # A bare id matches an agent of any type with that id (https://hl7.org/fhir/R4/search.html#reference).
    return _ends_with(audit_log.c.actor, f"/{reference}", dialect)


def _patient_condition(value: str, dialect: str) -> ColumnElement[bool]:
    reference = _reference_value(value)
    if "/" in reference:
        match = _REFERENCE.match(reference)
        if match is None or match["type"] != "Patient" or match["version"]:
            return false()
        patient_id = match["id"]
    else:
        patient_id = reference
    # AuditEvent `patient`: agent.who or entity.what that is a Patient.
    return or_(audit_log.c.patient == patient_id, audit_log.c.actor == f"Patient/{patient_id}")


def _entity_condition(value: str, dialect: str) -> ColumnElement[bool]:
    reference = _reference_value(value)
    entities = audit_log.c.entities
    match = _REFERENCE.match(reference)
    if match is not None:
        kind, ident, version = match["type"], match["id"], match["version"]
        if version is not None:
            return _contains(entities, f'"{reference}"', dialect)
        parts = [
            _contains(entities, f'"{kind}/{ident}"', dialect),
            _contains(entities, f'"{kind}/{ident}/_history/', dialect),
        ]
        if kind == "Patient":
            parts.append(audit_log.c.patient == ident)
        return or_(*parts)
    if not _PLAIN_ID.match(reference):
        return false()
    # A bare id: any type. (A version equal to the id also matches `T/x/_history/<id>`; ids and
    # version numbers rarely collide, and the patient entity is matched exactly.)
    return or_(
        audit_log.c.patient == reference,
        _contains(entities, f'/{reference}"', dialect),
        _contains(entities, f"/{reference}/_history/", dialect),
    )


def _id_condition(value: str, dialect: str) -> ColumnElement[bool]:
    return audit_log.c.seq == int(value) if value.isdigit() and len(value) <= 18 else false()


_VALUE_CONDITIONS = {
    "_id": _id_condition,
    "agent": _agent_condition,
    "patient": _patient_condition,
    "entity": _entity_condition,
    "action": _action_condition,
    "type": _type_condition,
    "subtype": _subtype_condition,
    "outcome": _outcome_condition,
    "agent-role": _role_condition,
}


def _conditions(params: Mapping[str, list[str]], connection: Connection) -> list[ColumnElement[bool]]:
    context = MatchContext(
        resource_types=frozenset(),
        base_url="",
        dialect=connection.dialect.name,
        now=clock.now().replace(tzinfo=None),
    )
    conditions: list[ColumnElement[bool]] = []
    for name, values in params.items():
        if name in _IGNORED or name == "_sort":
            continue
        if ":" in name:
            raise BadRequest(f"AuditEvent search does not support the modifier in {name!r}")
        if name not in SEARCH_PARAMS:
            raise BadRequest(f"Unknown AuditEvent search parameter {name!r}")
        for value in values:  # repeated parameters: all must match
            alternatives = [v for v in split_unescaped(value, ",") if v != ""]
            if not alternatives:
                raise BadRequest(f"{name}: empty value")
            if name == "date":
                recorded = audit_log.c.recorded
                any_of = [
                    date_match(recorded, recorded, parse_date(v, name), ctx=context, suffix="+00:00")
                    for v in alternatives
                ]
            else:
                any_of = [_VALUE_CONDITIONS[name](v, context.dialect) for v in alternatives]
            conditions.append(or_(*any_of))
    return conditions


def _order(params: Mapping[str, list[str]], connection: Connection) -> list[Any]:
    c = audit_log.c
    columns: dict[str, Any] = {
        "_id": c.seq,
        "date": c.recorded,
        "agent": c.actor,
        "patient": c.patient,
        "subtype": c.action,
        # a token sorts by its code (0 success, 4 denied, 8 failed), not by Garrison's words
        "outcome": case(*((c.outcome == name, code) for name, code in OUTCOME_CODE.items()), else_="12"),
    }
    keys = [k for value in params.get("_sort", []) for k in value.split(",") if k]
    order: list[Any] = []
    descending_first: bool | None = None
    for key in keys:
        descending = key.startswith("-")
        name = key.lstrip("-")
        if name not in SORT_KEYS:
            raise BadRequest(f"AuditEvent cannot be sorted by {name!r}")
        column = columns[name]
        if connection.dialect.name == "postgresql" and name != "_id":
            column = column.collate("C")  # code-point order on both databases
        # NULLs sort as the smallest value on both databases.
        order.append(column.desc().nulls_last() if descending else column.asc().nulls_first())
        if descending_first is None:
            descending_first = descending
    # Newest first unless told otherwise; seq breaks ties in the first key's direction.
    order.append(c.seq.asc() if descending_first is False else c.seq.desc())
    return order


def search_audit_events(
    connection: Connection, params: Mapping[str, list[str]], count: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of AuditEvents matching `params` (raw FHIR search parameters, repeated values as
    list items), and the total number of matches. Unknown parameters raise BadRequest."""
    if count < 0 or offset < 0:
        raise BadRequest("_count and the offset must not be negative")
    conditions = _conditions(params, connection)
    order = _order(params, connection)
    where = and_(true(), *conditions)
    total = int(connection.execute(select(func.count()).select_from(audit_log).where(where)).scalar_one())
    if count == 0 or offset >= total:
        return [], total
    rows = connection.execute(select(audit_log).where(where).order_by(*order).limit(count).offset(offset))
    return [audit_event(decode_row(r)) for r in rows], total
