"""Audit reports filter and sort by user, patient, date range and action; the results equal a plain
Python oracle evaluated over the AuditEvent resources themselves (checklist U5, 170.315(d)(3)).

The oracle reads the FHIR resource (agent.who, entity.what, subtype codings, recorded, ...), so it
also checks that search finds exactly what the resources show.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from garrison.audit.actions import ACTION_SYSTEM, AUDIT_EVENT_TYPE, DCM, RESTFUL_INTERACTION
from garrison.audit.chain import append_records
from garrison.audit.fhir_view import search_audit_events
from garrison.audit.records import AuditRecord, Outcome
from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.search.values import date_range

EVENTS = 2000
COMBINATIONS = 50
START = datetime(2026, 9, 1, tzinfo=UTC)
ACTIONS = [
    "patient:record:read",
    "patient:record:vread",
    "patient:record:search",
    "patient:record:create",
    "patient:record:update",
    "patient:record:delete",
    "patient:record:export",
    "patient:break_glass:start",
    "patient:break_glass:stop",
    "user:session:login",
    "user:session:login_failed",
    "user:privilege:grant",
    "admin:job:ran",
]
ACTORS = [f"Practitioner/{i}" for i in range(6)] + [
    "Patient/3",
    "RelatedPerson/2",
    "client/va",
    "system/import",
]
ROLES = ["physician", "nurse", "front_desk", "patient", "proxy", "system"]
PATIENT_IDS = [str(i) for i in range(12)]
PATIENTS = [None, *PATIENT_IDS]
OUTCOMES: list[Outcome] = ["success", "denied", "failed"]
ENTITY_POOL = [f"Observation/{i}" for i in range(20)] + [f"Condition/{i}" for i in range(8)]


def _event(rng: random.Random) -> AuditRecord:
    entities = []
    for _ in range(rng.randrange(4)):
        ref = rng.choice(ENTITY_POOL)
        entities.append(f"{ref}/_history/{rng.randrange(1, 4)}" if rng.random() < 0.4 else ref)
    return AuditRecord(
        action=rng.choice(ACTIONS),
        outcome=rng.choices(OUTCOMES, [8, 2, 1])[0],
        actor=rng.choice(ACTORS),
        role=rng.choice(ROLES),
        # 60 days, out of order against seq (clocks and writers need not agree)
        recorded=START + timedelta(seconds=rng.randrange(60 * 86400), microseconds=rng.randrange(10**6)),
        patient=rng.choice(PATIENTS),
        entities=tuple(entities),
        purpose_of_use=rng.choice(["TREAT", "ETREAT", None]),
        source=rng.choice(["10.0.0.1", "client/portal", None]),
    )


# ----------------------------------------------------------------------------- the oracle


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in event["agent"] if a["requestor"])


def _who(event: dict[str, Any]) -> str:
    who = _requestor(event)["who"]
    return str(who.get("reference") or who["identifier"]["value"])


def _whats(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})]


def _token_match(codings: list[dict[str, Any]], value: str) -> bool:
    system, _, code = value.rpartition("|") if "|" in value else (None, "", value)
    return any((system is None or c.get("system") == system) and c.get("code") == code for c in codings)


def _date_match(recorded: str, value: str) -> bool:
    prefix, text = (value[:2], value[2:]) if value[:2] in {"ge", "le", "gt", "lt", "eq"} else ("eq", value)
    found = date_range(text)
    assert found is not None
    low, high = (datetime.fromisoformat(b).replace(tzinfo=UTC) for b in found)
    moment = datetime.fromisoformat(recorded)
    return {
        "eq": low <= moment <= high,
        "ge": moment >= low,
        "gt": moment > high,
        "le": moment <= high,
        "lt": moment < low,
    }[prefix]


def _matches(event: dict[str, Any], name: str, value: str) -> bool:
    if name == "agent":
        return _who(event) == value
    if name == "patient":
        target = f"Patient/{value.removeprefix('Patient/')}"
        return target in _whats(event) or _requestor(event)["who"].get("reference") == target
    if name == "entity":
        return any(w == value or w.startswith(f"{value}/_history/") for w in _whats(event))
    if name == "action":
        return bool(event["action"] == value)
    if name == "outcome":
        return bool(event["outcome"] == value)
    if name == "subtype":
        return _token_match(event["subtype"], value)
    if name == "type":
        return _token_match([event["type"]], value)
    if name == "agent-role":
        return any(c["code"] == value for r in _requestor(event)["role"] for c in r["coding"])
    if name == "date":
        return _date_match(event["recorded"], value)
    raise AssertionError(name)


def _oracle(events: list[dict[str, Any]], params: dict[str, list[str]]) -> list[dict[str, Any]]:
    found = [
        e
        for e in events
        if all(
            any(_matches(e, name, v) for v in value.split(","))
            for name, values in params.items()
            if name != "_sort"
            for value in values
        )
    ]
    sort = params.get("_sort", [])
    keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "date": lambda e: e["recorded"],
        "agent": _who,
        "patient": lambda e: next((w[8:] for w in _whats(e) if w.startswith("Patient/")), ""),
        "outcome": lambda e: e["outcome"],
    }
    descending = sort[0].startswith("-") if sort else True
    found.sort(key=lambda e: int(e["id"]), reverse=descending)  # ties: seq, in the first key's direction
    for key in reversed(sort[0].split(",") if sort else []):
        found.sort(key=keys[key.lstrip("-")], reverse=key.startswith("-"))
    return found


# ----------------------------------------------------------------------------- the filters


def _random_params(rng: random.Random, events: list[dict[str, Any]]) -> dict[str, list[str]]:
    sample = rng.choice(events)  # anchor values on a real event so results are rarely empty
    choices: dict[str, Callable[[], str]] = {
        "agent": lambda: rng.choice([_who(sample), rng.choice(ACTORS)]),
        "patient": lambda: (
            f"Patient/{rng.choice(PATIENT_IDS)}" if rng.random() < 0.7 else rng.choice(PATIENT_IDS)
        ),
        "entity": lambda: rng.choice(_whats(sample) or ENTITY_POOL),
        "action": lambda: ",".join(rng.sample("CRUDE", rng.randrange(1, 3))),
        "outcome": lambda: rng.choice(["0", "4", "8", "0,4"]),
        "subtype": lambda: rng.choice(
            [
                f"{RESTFUL_INTERACTION}|read",
                f"{RESTFUL_INTERACTION}|search-type",
                "create",
                f"{ACTION_SYSTEM}|{rng.choice(ACTIONS)}",
                f"{DCM}|110127",
                f"{DCM}|110122,{DCM}|110136",
            ]
        ),
        "type": lambda: rng.choice([f"{AUDIT_EVENT_TYPE}|rest", f"{DCM}|110114", f"{DCM}|110113", "110100"]),
        "agent-role": lambda: rng.choice(ROLES),
        "date": lambda: (
            rng.choice(["ge", "le", "gt", "lt", ""])
            + rng.choice([sample["recorded"][:10], sample["recorded"][:7], sample["recorded"][:16] + "Z"])
        ),
    }
    params: dict[str, list[str]] = {}
    for name in rng.sample(sorted(choices), rng.randrange(1, 4)):
        params[name] = [choices[name]()]
    if "date" in params and rng.random() < 0.5:  # a date range: two bounds, both must hold
        end = datetime.fromisoformat(sample["recorded"]) + timedelta(days=rng.randrange(1, 20))
        params["date"] = [f"ge{sample['recorded'][:10]}", f"lt{end.date().isoformat()}"]
    if rng.random() < 0.6:
        keys = rng.sample(["date", "agent", "patient", "outcome"], rng.randrange(1, 3))
        params["_sort"] = [",".join(("-" if rng.random() < 0.5 else "") + k for k in keys)]
    return params


@pytest.fixture
def audit_events(engine: Engine) -> tuple[Engine, list[dict[str, Any]]]:
    rng = random.Random(2147)
    with write_transaction(engine) as connection:
        append_records(connection, [_event(rng) for _ in range(EVENTS)])
    with read_transaction(engine) as connection:
        events, total = search_audit_events(connection, {}, EVENTS, 0)
    assert total == EVENTS
    return engine, events


def test_report_queries_equal_the_oracle(audit_events: tuple[Engine, list[dict[str, Any]]]) -> None:
    # checklist U5: 50 random filter combinations; result sets (and order, and totals) equal the oracle.
    engine, events = audit_events
    rng = random.Random(99)
    nonempty = 0
    with read_transaction(engine) as connection:
        for _ in range(COMBINATIONS):
            params = _random_params(rng, events)
            expected = _oracle(events, params)
            count, offset = rng.choice([(10_000, 0), (25, 0), (20, rng.randrange(0, 40))])
            page, total = search_audit_events(connection, params, count, offset)
            assert total == len(expected), params
            assert [e["id"] for e in page] == [e["id"] for e in expected[offset : offset + count]], params
            nonempty += bool(expected)
    assert nonempty >= COMBINATIONS // 2  # the filters were not all trivially empty
