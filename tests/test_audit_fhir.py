"""The audit log as FHIR AuditEvent (IHE BALP shapes), search errors, and the patient's accounting of
disclosures (checklist U1, U2, U6, P1)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from garrison.audit.actions import ACTION_SYSTEM, DCM, RESTFUL_INTERACTION
from garrison.audit.chain import append_records
from garrison.audit.fhir_view import read_audit_event, search_audit_events
from garrison.audit.records import AuditRecord
from garrison.audit.reports import AuditFilter, accounting_of_disclosures, find_audit_rows
from garrison.db.engine import read_transaction, write_transaction
from garrison.errors import BadRequest
from garrison.fhir.definitions import Definitions
from garrison.fhir.validation import validator_for

T0 = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)

RECORDS = [
    # 1: a clinician reads an observation of patient 7 from a workstation
    AuditRecord(
        action="patient:record:read",
        outcome="success",
        actor="Practitioner/12",
        role="physician",
        recorded=T0,
        patient="7",
        entities=("Observation/3/_history/2",),
        purpose_of_use="TREAT",
        source="10.20.30.40",
        session="sess-abc",
    ),
    # 2: a search through a client application, with the query and the ids returned
    AuditRecord(
        action="patient:record:search",
        outcome="success",
        actor="Practitioner/12",
        role="physician",
        recorded=T0 + timedelta(minutes=1),
        patient="7",
        entities=("Patient/7", "Condition/9", "Condition/10"),
        purpose_of_use="TREAT",
        source="client/smart-app",
        detail={"query": "Condition?patient=7&clinical-status=active", "count": 2},
    ),
    # 3: a failed sign-in before anyone is known (checklist A2, U2)
    AuditRecord(
        action="user:session:login_failed",
        outcome="denied",
        actor="account/3f1c",
        role="anonymous",
        recorded=T0 + timedelta(minutes=2),
        source="2001:db8::7",
        detail={"reason": "wrong password", "attempt": 2},
    ),
    # 4: break-the-glass starts (checklist U6: DICOM 110127, purpose ETREAT)
    AuditRecord(
        action="patient:break_glass:start",
        outcome="success",
        actor="Practitioner/12",
        role="physician",
        recorded=T0 + timedelta(minutes=3),
        patient="8",
        purpose_of_use="ETREAT",
        detail={"reason": "unconscious patient in the emergency department", "minutes": 60},
    ),
    AuditRecord(
        action="patient:break_glass:stop",
        outcome="success",
        actor="Practitioner/12",
        role="physician",
        recorded=T0 + timedelta(minutes=63),
        patient="8",
        purpose_of_use="ETREAT",
    ),
    # 6: the patient reads their own record in the portal
    AuditRecord(
        action="patient:record:read",
        outcome="success",
        actor="Patient/7",
        role="patient",
        recorded=T0 + timedelta(minutes=4),
        patient="7",
        entities=("Patient/7",),
        purpose_of_use="PATRQT",
    ),
    # 7: a proxy is denied a confidential record (checklist U2)
    AuditRecord(
        action="patient:record:read",
        outcome="denied",
        actor="RelatedPerson/5",
        role="proxy",
        recorded=T0 + timedelta(minutes=5),
        patient="7",
        entities=("Observation/44",),
        purpose_of_use="PWATRNY",
        detail={"reason": "adolescent-confidential"},
    ),
    # 8: a backend export for the VA, a privilege grant, a token, and an unknown kind of action
    AuditRecord(
        action="patient:record:export",
        outcome="success",
        actor="client/va-exchange",
        role="system",
        recorded=T0 + timedelta(minutes=6),
        patient="7",
        purpose_of_use="TREAT",
        source="client/va-exchange",
    ),
    AuditRecord(
        action="user:privilege:grant",
        outcome="success",
        actor="Practitioner/1",
        role="administrator",
        recorded=T0 + timedelta(minutes=7),
        entities=("account/77",),
        detail={"role": "privacy_officer"},
    ),
    AuditRecord(
        action="oauth:token:issued",
        outcome="success",
        actor="client/smart-app",
        role="system",
        recorded=T0 + timedelta(minutes=8),
        session="jti-123",
    ),
    AuditRecord(
        action="admin:settings:touch",
        outcome="failed",
        actor="system/cron",
        role="system",
        recorded=T0 + timedelta(minutes=9),
    ),
    AuditRecord(
        action="patient:record:update",
        outcome="success",
        actor="Practitioner/13",
        role="nurse",
        recorded=T0 + timedelta(minutes=10),
        patient="7",
        entities=("Observation/3/_history/3",),
        purpose_of_use="TREAT",
    ),
]


@pytest.fixture
def events(engine: Engine) -> Engine:
    with write_transaction(engine) as connection:
        append_records(connection, RECORDS)
    return engine


def _read(engine: Engine, event_id: str) -> dict[str, Any]:
    with read_transaction(engine) as connection:
        event = read_audit_event(connection, event_id)
    assert event is not None
    return event


def test_every_audit_event_is_valid_r4(events: Engine, definitions: Definitions) -> None:
    validator = validator_for(definitions)
    for seq in range(1, len(RECORDS) + 1):
        event = _read(events, str(seq))
        assert validator.validate(event) == [], (seq, event)
        assert event["id"] == str(seq)
        assert event["agent"][0]["requestor"] is True


def test_read_shape_follows_balp(events: Engine) -> None:
    event = _read(events, "1")
    assert event["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    assert event["subtype"] == [
        {"system": RESTFUL_INTERACTION, "code": "read", "display": "read"},
        {"system": ACTION_SYSTEM, "code": "patient:record:read"},
    ]
    assert (event["action"], event["outcome"]) == ("R", "0")
    assert event["recorded"] == "2026-11-20T08:30:00.000000+00:00"
    agent = event["agent"][0]
    assert agent["who"] == {"reference": "Practitioner/12"}
    assert agent["role"][0]["coding"][0]["code"] == "physician"
    assert agent["network"] == {"address": "10.20.30.40", "type": "2"}
    assert agent["policy"] == ["sess-abc"]
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert event["source"]["observer"] == {"display": "Garrison"}
    patient, observation = event["entity"]
    assert patient["what"] == {"reference": "Patient/7"}
    assert patient["role"]["code"] == "1"
    assert observation["what"] == {"reference": "Observation/3/_history/2"}


def test_search_event_carries_its_query_and_results(events: Engine) -> None:
    event = _read(events, "2")
    assert event["action"] == "E"
    assert event["subtype"][0]["code"] == "search-type"
    what = [e["what"]["reference"] for e in event["entity"] if "what" in e]
    assert what == ["Patient/7", "Condition/9", "Condition/10"]  # the patient entity once
    query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == "Condition?patient=7&clinical-status=active"
    application = event["agent"][1]
    assert application["requestor"] is False
    assert application["who"]["identifier"]["value"] == "client/smart-app"


def test_sign_in_and_break_the_glass_codes(events: Engine) -> None:
    failed = _read(events, "3")
    assert (failed["type"]["system"], failed["type"]["code"]) == (DCM, "110114")
    assert failed["subtype"][0]["code"] == "110122"
    assert failed["outcome"] == "4" and failed["outcomeDesc"] == "wrong password"
    assert failed["agent"][0]["who"] == {
        "identifier": {"system": "http://garrison.health/fhir/sid/actor", "value": "account/3f1c"},
        "display": "account/3f1c",
    }
    start, stop = _read(events, "4"), _read(events, "5")
    assert [start["subtype"][0]["code"], stop["subtype"][0]["code"]] == ["110127", "110138"]
    assert start["type"]["code"] == "110113"
    assert start["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    detail = next(e for e in start["entity"] if e.get("name") == "detail")
    assert {"type": "reason", "valueString": "unconscious patient in the emergency department"} in detail[
        "detail"
    ]
    assert _read(events, "11")["outcome"] == "8"
    assert _read(events, "9")["subtype"][0]["code"] == "110136"


def test_unknown_events_are_absent(events: Engine) -> None:
    with read_transaction(events) as connection:
        assert read_audit_event(connection, "999") is None
        assert read_audit_event(connection, "abc") is None
        assert read_audit_event(connection, "1" * 40) is None


def _search(engine: Engine, params: dict[str, list[str]], count: int = 50, offset: int = 0) -> list[str]:
    with read_transaction(engine) as connection:
        found, total = search_audit_events(connection, params, count, offset)
    ids = [e["id"] for e in found]
    assert total >= len(ids)
    return ids


def test_search_parameters(events: Engine) -> None:
    assert _search(events, {}) == [str(n) for n in range(12, 0, -1)]  # newest first
    assert _search(events, {"agent": ["Practitioner/12"], "_sort": ["date"]}) == ["1", "2", "4", "5"]
    assert _search(events, {"patient": ["Patient/8"]}) == ["5", "4"]
    assert _search(events, {"action": ["C,U"]}) == ["12", "9"]
    assert _search(events, {"subtype": [f"{DCM}|110127,{DCM}|110138"]}) == ["5", "4"]
    assert _search(events, {"subtype": ["patient:record:export"]}) == ["8"]
    assert _search(events, {"type": [f"{DCM}|110114"]}) == ["10", "3"]
    assert _search(events, {"outcome": ["4"]}) == ["7", "3"]
    assert _search(events, {"entity": ["Observation/3"]}) == ["12", "1"]
    assert _search(events, {"entity": ["Observation/3/_history/2"]}) == ["1"]
    assert _search(events, {"date": ["ge2026-11-20T08:33:00Z", "lt2026-11-20T08:35Z"]}) == ["6", "4"]
    assert _search(events, {"agent-role": ["nurse"]}) == ["12"]
    assert _search(events, {"_id": ["3,4"]}) == ["4", "3"]
    assert _search(events, {"_sort": ["-date"]}, count=2, offset=1) == ["12", "11"]  # 5 is the newest


@pytest.mark.parametrize(
    "params",
    [
        {"name": ["x"]},
        {"agent:Practitioner": ["12"]},
        {"date": ["yesterday"]},
        {"_sort": ["hash"]},
        {"patient": [""]},
        {"subtype": ["a|b|c"]},
    ],
)
def test_search_rejects_what_it_does_not_know(events: Engine, params: dict[str, list[str]]) -> None:
    with read_transaction(events) as connection, pytest.raises(BadRequest):
        search_audit_events(connection, params, 10, 0)


def test_accounting_of_disclosures(events: Engine) -> None:
    # checklist P1: who viewed or changed my record; the patient's own reads are not listed.
    with read_transaction(events) as connection:
        found = accounting_of_disclosures(connection, "7")
        assert accounting_of_disclosures(connection, "404") == []
        since = accounting_of_disclosures(connection, "7", since=T0 + timedelta(minutes=5))
    assert [d.seq for d in found] == [12, 8, 7, 2, 1]
    assert [d.seq for d in since] == [12, 8, 7]
    export = next(d for d in found if d.seq == 8)
    assert (export.actor, export.role, export.description, export.purpose_of_use) == (
        "client/va-exchange",
        "system",
        "exported",
        "TREAT",
    )
    assert export.recipient == "client/va-exchange"
    denied = next(d for d in found if d.seq == 7)
    assert (denied.actor, denied.outcome, denied.description) == ("RelatedPerson/5", "denied", "viewed")
    assert found[-1].recorded == T0


def test_report_filters(events: Engine) -> None:
    with read_transaction(events) as connection:
        rows = find_audit_rows(connection, AuditFilter(action="patient:break_glass:*"))
        assert [r.seq for r in rows] == [4, 5]
        rows = find_audit_rows(
            connection,
            AuditFilter(
                actor="Practitioner/12", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4)
            ),
        )
        assert [r.seq for r in rows] == [2, 4]
        assert [r.seq for r in find_audit_rows(connection, AuditFilter(outcome="denied"))] == [3, 7]
        assert [r.seq for r in find_audit_rows(connection, AuditFilter(patient="8"), limit=1)] == [4]


def test_reference_searches_are_exact_and_case_sensitive(engine: Engine) -> None:
    # FHIR ids are case-sensitive; SQLite's LIKE is not, so the search must not use it.
    base = RECORDS[0]
    records = [
        replace(base, actor="Practitioner/Ab", entities=("Observation/ab",)),
        replace(base, actor="Practitioner/ab", entities=("Observation/AB-1",)),
        replace(base, actor="client/xab", entities=("Observation/ab/_history/4",)),
    ]
    with write_transaction(engine) as connection:
        append_records(connection, records)
    assert _search(engine, {"entity": ["Observation/ab"]}) == ["3", "1"]
    assert _search(engine, {"entity": ["Observation/AB-1"]}) == ["2"]
    assert _search(engine, {"entity": ["Observation/A%"]}) == []
    assert _search(engine, {"entity": ["ab"]}) == ["3", "1"]
    assert _search(engine, {"agent": ["ab"]}) == ["2"]
    assert _search(engine, {"agent": ["Practitioner/Ab"]}) == ["1"]
    assert _search(engine, {"agent": ["http://elsewhere.example/fhir/Practitioner/Ab"]}) == ["1"]
    with read_transaction(engine) as connection:
        assert find_audit_rows(connection, AuditFilter(action="PATIENT:*")) == []
