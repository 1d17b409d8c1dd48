"""Take your record with you: the whole record as a FHIR Bundle, a printable summary, and the
SMART apps connected to the account (see them, disconnect them).

The download runs the `Patient/$everything` operation
(https://hl7.org/fhir/R4/patient-operation-everything.html) under the user's own context, so it
holds exactly what the access policy lets this user see (a parent of a 13-to-17-year-old gets no
adolescent-confidential item), less the results the portal's release policy still holds for the
care team (`garrison.portal.release`), and is handed over as a `collection` Bundle
(https://hl7.org/fhir/R4/bundle.html#bundle-types): a set of resources to keep, not the answer to a
search. The export is audited once as `portal:record:export`, naming every resource handed over;
the summary as `portal:record:print`.

Connected apps are OAuth grants (`garrison.oauth`): a grant is a family of tokens that came from
one authorization code and its refreshes. Disconnecting an app revokes every live family of that
app for this account (`revoke_family`), so neither its refresh tokens nor its access tokens work
again.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import Connection, select

from garrison import clock
from garrison.audit.records import AuditRecord
from garrison.errors import Forbidden, NotFound
from garrison.fhir.audit_trail import access_records
from garrison.fhir.jsoncodec import dumps_bytes, parse_json
from garrison.fhir.operations import OPERATIONS, OperationCall
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, format_instant
from garrison.fhir.search.query import SearchRequest
from garrison.oauth import events
from garrison.oauth.model import as_utc
from garrison.oauth.scopes import (
    FHIR_USER,
    LAUNCH,
    LAUNCH_PATIENT,
    OFFLINE_ACCESS,
    ONLINE_ACCESS,
    OPENID,
    parse_resource_scope,
)
from garrison.oauth.tables import oauth_client, oauth_code, oauth_refresh_token, oauth_token
from garrison.oauth.tokens import revoke_access_token, revoke_family
from garrison.portal.disclosures import TYPE_WORDS
from garrison.portal.record_text import concept_text, quantity_text, resource_name, when
from garrison.portal.release import RESULT_TYPES, ResultGate
from garrison.settings import Settings

Json = dict[str, Any]
EXPORT_PAGE = 1000  # resources per $everything page (its own default)
RECENT_RESULTS = 20
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


# -- the whole record ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordExport:
    body: bytes  # a FHIR Bundle (JSON)
    filename: str
    resources: int
    held_results: int  # results not included yet: waiting for the care team (portal.release)


def export_record(repo: Repository) -> RecordExport:
    """The record in view as a `collection` Bundle of everything this user may see, less the
    results the portal still holds back for the care team to discuss first (`portal.release`)."""
    patient = repo.context.patient
    if patient is None:
        raise Forbidden("Choose whose record to download first.")
    repo.guard.require_operation("everything")  # as the FHIR router would for $everything
    operation = OPERATIONS["$everything"]
    base = repo.settings.base_url.rstrip("/")
    entries: list[Json] = []
    params: tuple[tuple[str, str], ...] = (("_count", str(EXPORT_PAGE)),)
    for _ in range(10_000):  # a page of 1,000 each time: bounded, whatever the record's size
        call = OperationCall("Patient", patient, params, None, "GET", base)
        _, page = operation.run(repo, call)
        # The page holds stored JSON as-is (orjson fragments); read it back as plain values.
        entries.extend(
            {"fullUrl": e["fullUrl"], "resource": e["resource"]}
            for e in parse_json(dumps_bytes(page))["entry"]
        )
        cursor = _next_cursor(page)
        if cursor is None:
            break
        params = (("_count", str(EXPORT_PAGE)), ("_cursor", cursor))
    results = [e["resource"] for e in entries if e["resource"].get("resourceType") in RESULT_TYPES]
    gate = ResultGate.load(repo, results)
    kept = [
        e
        for e in entries
        if e["resource"].get("resourceType") not in RESULT_TYPES or gate.admits(e["resource"])
    ]
    now = clock.now()
    document: Json = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": format_instant(now)},
        "type": "collection",
        "timestamp": format_instant(now),
        "entry": kept,
    }
    if repo.context.audited:
        handed = [
            StoredResource(e["resource"]["resourceType"], e["resource"]["id"], 0, "", False, None)
            for e in kept
        ]
        detail = {"resources": len(kept), "held_results": len(entries) - len(kept)}
        repo.audit.extend(access_records(repo.context, "portal:record:export", handed, detail))
    owner = next((e["resource"] for e in kept if e["fullUrl"] == f"{base}/Patient/{patient}"), None)
    return RecordExport(dumps_bytes(document), _filename(owner, now), len(kept), len(entries) - len(kept))


def _next_cursor(bundle: Json) -> str | None:
    for link in bundle.get("link", ()):
        if link.get("relation") == "next":
            for name, value in parse_qsl(urlsplit(str(link.get("url", ""))).query):
                if name == "_cursor":
                    return value
    return None


def _filename(patient: Json | None, moment: datetime) -> str:
    """health-record-jane-doe-2026-11-26.json: ASCII only, safe in a Content-Disposition header."""
    name = resource_name(patient) if patient else ""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60]
    return f"health-record-{slug + '-' if slug else ''}{moment.date().isoformat()}.json"


# -- the printable summary ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryRow:
    what: str
    detail: str = ""
    when: str = ""
    flag: str = ""  # "High", "Low", "Abnormal": said in words, never by colour alone


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What a clinician new to the patient would ask first. A section is None when this user's
    access does not include it (it is then said so, rather than shown empty)."""

    name: str
    birth_date: str
    generated: datetime
    problems: list[SummaryRow] | None
    medications: list[SummaryRow] | None
    allergies: list[SummaryRow] | None
    immunizations: list[SummaryRow] | None
    results: list[SummaryRow] | None
    held_results: int = 0  # results waiting for the care team to review (not shown)
    shown: list[StoredResource] = field(default_factory=list)


def record_summary(repo: Repository) -> RecordSummary:
    patient_id = repo.context.patient
    if patient_id is None:
        raise Forbidden("Choose whose record to print first.")
    patient = f"Patient/{patient_id}"
    shown: list[StoredResource] = []

    def find(resource_type: str, params: list[tuple[str, str]]) -> list[Json] | None:
        if not repo.guard.allows("search", resource_type):
            return None
        page = repo.search(SearchRequest(resource_type, [("patient", patient), *params]))
        shown.extend(page.matches)
        return [m.parsed() for m in page.matches]

    person = repo.read("Patient", patient_id)
    shown.append(person)
    conditions = find("Condition", [("clinical-status", "active"), ("_count", "100")])
    medications = find("MedicationRequest", [("status", "active"), ("_count", "100")])
    allergies = find("AllergyIntolerance", [("_count", "100")])
    immunizations = find("Immunization", [("_sort", "-date"), ("_count", "100")])
    results = find(
        "Observation", [("category", "laboratory"), ("_sort", "-date"), ("_count", str(RECENT_RESULTS * 2))]
    )
    held = 0
    if results is not None:
        gate = ResultGate.load(repo, results)
        results = gate.filter(results)[:RECENT_RESULTS]
        held = gate.held
        released = {r["id"] for r in results}
        shown = [s for s in shown if s.resource_type != "Observation" or s.id in released]
    summary = RecordSummary(
        name=resource_name(person.parsed()),
        birth_date=_day(person.parsed().get("birthDate")),
        generated=clock.now(),
        problems=None if conditions is None else sorted(map(_problem, conditions), key=_by_what),
        medications=None if medications is None else sorted(map(_medicine, medications), key=_by_what),
        allergies=None if allergies is None else [_allergy(a) for a in allergies if _active_allergy(a)],
        immunizations=None if immunizations is None else [_immunization(i) for i in immunizations],
        results=None if results is None else [_result(o) for o in results],
        held_results=held,
        shown=shown,
    )
    if repo.context.audited:
        repo.audit.extend(access_records(repo.context, "portal:record:print", shown, {}))
    return summary


def _by_what(row: SummaryRow) -> str:
    return row.what.lower()


def _day(value: Any) -> str:
    parsed = when(value)
    return parsed.text if parsed is not None else ""


def _problem(condition: Json) -> SummaryRow:
    onset = _day(condition.get("onsetDateTime") or (condition.get("onsetPeriod") or {}).get("start"))
    return SummaryRow(concept_text(condition.get("code")) or "A health problem", "", onset)


def _medicine(order: Json) -> SummaryRow:
    name = concept_text(order.get("medicationCodeableConcept")) or str(
        (order.get("medicationReference") or {}).get("display") or "A medicine"
    )
    dosage = "; ".join(
        str(d["text"]) for d in order.get("dosageInstruction") or () if isinstance(d.get("text"), str)
    )
    return SummaryRow(name, dosage, _day(order.get("authoredOn")))


def _active_allergy(allergy: Json) -> bool:
    codes = [c.get("code") for c in (allergy.get("clinicalStatus") or {}).get("coding") or ()]
    return not codes or "active" in codes


def _allergy(allergy: Json) -> SummaryRow:
    reactions = [
        concept_text(m)
        for reaction in allergy.get("reaction") or ()
        for m in reaction.get("manifestation") or ()
        if concept_text(m)
    ]
    detail = f"Reaction: {', '.join(reactions)}" if reactions else ""
    flag = "High risk" if allergy.get("criticality") == "high" else ""
    return SummaryRow(concept_text(allergy.get("code")) or "An allergy", detail, "", flag)


def _immunization(immunization: Json) -> SummaryRow:
    vaccine = concept_text(immunization.get("vaccineCode")) or "A vaccine"
    if immunization.get("status", "completed") != "completed":
        vaccine = f"{vaccine} (not given)"
    return SummaryRow(vaccine, "", _day(immunization.get("occurrenceDateTime")))


_FLAGS = {"H": "High", "HH": "Critically high", "L": "Low", "LL": "Critically low", "A": "Abnormal"}


def _result(observation: Json) -> SummaryRow:
    value = (
        quantity_text(observation.get("valueQuantity"))
        or concept_text(observation.get("valueCodeableConcept"))
        or str(observation.get("valueString") or "")
    )
    ranges = observation.get("referenceRange") or []
    if ranges:
        low, high = quantity_text(ranges[0].get("low")), quantity_text(ranges[0].get("high"))
        usual = ranges[0].get("text") or (f"{low} to {high}" if low and high else "")
        if usual:
            value = f"{value} (usual range {usual})" if value else f"usual range {usual}"
    flag = ""
    for concept in observation.get("interpretation") or ():
        for coding in concept.get("coding") or ():
            if coding.get("system") == INTERPRETATION and coding.get("code") in _FLAGS:
                flag = _FLAGS[coding["code"]]
    moment = observation.get("effectiveDateTime") or observation.get("issued")
    return SummaryRow(concept_text(observation.get("code")) or "A result", value, _day(moment), flag)


# -- connected apps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectedApp:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    granted: datetime
    last_used: datetime | None  # when it last got an access token
    patients: tuple[str, ...]  # whose records it was given (ids)
    offline: bool  # keeps working after sign-out
    families: tuple[str, ...] = ()

    @property
    def permissions(self) -> list[str]:
        return scope_words(self.scopes)


def connected_apps(connection: Connection, account_id: str) -> list[ConnectedApp]:
    """The apps holding a live grant (a refresh or access token that still works) from this
    account, newest grant first."""
    now = clock.now()
    refresh_rows = connection.execute(
        select(oauth_refresh_token).where(oauth_refresh_token.c.account_id == account_id)
    ).all()
    token_rows = connection.execute(select(oauth_token).where(oauth_token.c.account_id == account_id)).all()
    live: set[str] = set()
    clients: dict[str, str] = {}  # family -> client
    granted: dict[str, datetime] = {}
    used: dict[str, datetime] = {}
    scopes: dict[str, set[str]] = {}
    patients: dict[str, set[str]] = {}
    offline: set[str] = set()
    for row in refresh_rows:
        family = row.family_id
        clients[family] = row.client_id
        issued = as_utc(row.issued)
        granted[family] = min(granted.get(family, issued), issued)
        scopes.setdefault(family, set()).update(row.scope.split())
        if row.patient:
            patients.setdefault(family, set()).add(row.patient)
        if row.revoked is None and row.used is None and as_utc(row.expires) > now:
            live.add(family)
            if row.offline:
                offline.add(family)
    for row in token_rows:
        family = row.family_id or f"token:{row.jti}"
        clients[family] = row.client_id
        issued = as_utc(row.issued)
        granted[family] = min(granted.get(family, issued), issued)
        used[family] = max(used.get(family, issued), issued)
        if row.revoked is None and as_utc(row.expires) > now:
            live.add(family)
    if not live:
        return []
    _code_details(connection, [f for f in live if not f.startswith("token:")], scopes, patients)
    names = {
        row.client_id: row.name
        for row in connection.execute(
            select(oauth_client.c.client_id, oauth_client.c.name).where(
                oauth_client.c.client_id.in_(sorted({clients[f] for f in live}))
            )
        )
    }
    by_client: dict[str, list[str]] = {}
    for family in live:
        by_client.setdefault(clients[family], []).append(family)
    apps = [
        ConnectedApp(
            client_id=client,
            name=names.get(client, "An app"),
            scopes=tuple(sorted(set().union(*(scopes.get(f, set()) for f in families)))),
            granted=min(granted[f] for f in families),
            last_used=max((used[f] for f in families if f in used), default=None),
            patients=tuple(sorted(set().union(*(patients.get(f, set()) for f in families)))),
            offline=any(f in offline for f in families),
            families=tuple(sorted(families)),
        )
        for client, families in by_client.items()
    ]
    return sorted(apps, key=lambda a: a.granted, reverse=True)


def _code_details(
    connection: Connection, families: list[str], scopes: dict[str, set[str]], patients: dict[str, set[str]]
) -> None:
    """Scopes and patient of grants that have no refresh token, from their authorization code."""
    wanted = [f for f in families if not scopes.get(f)]
    if not wanted:
        return
    rows = connection.execute(
        select(oauth_code.c.family_id, oauth_code.c.scope, oauth_code.c.patient).where(
            oauth_code.c.family_id.in_(wanted)
        )
    )
    for row in rows:
        scopes.setdefault(row.family_id, set()).update(row.scope.split())
        if row.patient:
            patients.setdefault(row.family_id, set()).add(row.patient)


def disconnect_app(repo: Repository, account_id: str, client_id: str) -> int:
    """Revoke every live grant of `client_id` for this account; returns how many tokens stopped
    working. NotFound when the app holds no live grant (already disconnected)."""
    app = next((a for a in connected_apps(repo.connection, account_id) if a.client_id == client_id), None)
    if app is None:
        raise NotFound("That app is not connected to your account (any more).")
    revoked = 0
    for family in app.families:
        if family.startswith("token:"):
            revoked += revoke_access_token(repo.connection, family.removeprefix("token:"))
        else:
            revoked += revoke_family(repo.connection, family)
    # Written with the page's other audit records, last in the transaction.
    repo.audit.append(
        AuditRecord(
            action=events.TOKEN_REVOKED,
            outcome="success",
            actor=repo.context.actor,
            role=repo.context.role,
            recorded=clock.now(),
            source=repo.context.source,
            session=repo.context.session,
            detail={"client_id": client_id, "tokens": revoked, "reason": "disconnected in the portal"},
        )
    )
    return revoked


_IDENTITY_WORDS = {
    OPENID: "Know that it is you who signed in",
    FHIR_USER: "Know who you are in Garrison",
    LAUNCH_PATIENT: "Know whose record you chose",
    LAUNCH: "Open from within Garrison",
    OFFLINE_ACCESS: "Keep working after you sign out, until you disconnect it",
    ONLINE_ACCESS: "Keep working while you are signed in",
}
_VERBS = (("r", "read"), ("s", "search"), ("c", "add to"), ("u", "change"), ("d", "delete"))


def scope_words(scopes: Iterable[str]) -> list[str]:
    """Each granted scope in plain words ("Read and search results and vital signs")."""
    words: list[str] = []
    for scope in scopes:
        if scope in _IDENTITY_WORDS:
            words.append(_IDENTITY_WORDS[scope])
            continue
        parsed = parse_resource_scope(scope)
        if parsed is None:
            words.append(f"Other permission: {scope}")
            continue
        verbs = [word for letter, word in _VERBS if letter in parsed.permissions]
        verb = ", ".join(verbs[:-1]) + (" and " if len(verbs) > 1 else "") + verbs[-1]
        what = TYPE_WORDS.get(parsed.resource_type, f"{parsed.resource_type} records")
        whose = " (records you can see as a staff member)" if parsed.context == "user" else ""
        limits = (
            " (only some: " + ", ".join(f"{k}={v}" for k, v in parsed.parameters) + ")"
            if parsed.parameters
            else ""
        )
        words.append(f"{verb.capitalize()} {what}{limits}{whose}")
    return words


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What an app developer or a patient's app needs to connect (SMART App Launch)."""

    fhir_base: str
    smart_configuration: str


def connection_info(settings: Settings) -> ConnectionInfo:
    base = settings.base_url.rstrip("/")
    # https://hl7.org/fhir/smart-app-launch/conformance.html: {base}/.well-known/smart-configuration
    return ConnectionInfo(base, f"{base}/.well-known/smart-configuration")
