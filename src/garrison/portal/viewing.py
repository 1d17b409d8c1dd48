"""Whose record a portal user has in view: their own, or one they act for (a child, or an adult who
shared their record). The choice is kept per session (`portal_view`); whether it is still allowed
is decided again on every request by `garrison.callers` (guardianships end at 18, grants expire or
are revoked), and an outdated choice falls back to the user's own record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, delete, insert, select

from garrison import clock
from garrison.callers import ProxyGrant, proxy_grants
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.names import short_name
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant
from garrison.fhir.search.query import SearchRequest
from garrison.identity.model import Account
from garrison.portal.viewing_tables import portal_view
from garrison.settings import Settings

Relationship = Literal["self", "guardian", "granted"]
# Names and birth dates on the switcher, kept a minute per process: every portal page shows them,
# they are not what access depends on (the grants are read on every request), and a changed name
# shows up within the minute.
_NAMES: dict[str, tuple[float, dict[str, Any]]] = {}
_NAMES_SECONDS = 60.0
_NAMES_MAX = 50_000
ACCESS_WORDS = {
    "full": "full access",
    "limited": "limited access: what a teenager shares in confidence is not shown",
    "scheduling": "appointments, messages and refills only",
}


@dataclass(frozen=True, slots=True)
class RecordChoice:
    """One record the user may view, as the record switcher and the banner describe it."""

    patient_id: str
    name: str
    relationship: Relationship
    access: Literal["full", "limited", "scheduling"]
    birth_date: str | None
    ends: str | None

    @property
    def is_self(self) -> bool:
        return self.relationship == "self"

    @property
    def access_words(self) -> str:
        return ACCESS_WORDS[self.access]


def record_choices(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    account: Account,
    grants: list[ProxyGrant] | None = None,
) -> list[RecordChoice]:
    """The user's own record first (when they are a patient), then the records they act for
    (`grants`: the account's proxy grants, when the caller has just read them)."""
    own = account.fhir_user.removeprefix("Patient/") if account.fhir_user.startswith("Patient/") else None
    if grants is None:
        grants = proxy_grants(connection, definitions, settings, account.id)
    grants = [g for g in grants if g.patient_id != own]
    names = _patients(
        connection, definitions, settings, [*([own] if own else []), *(g.patient_id for g in grants)]
    )
    choices: list[RecordChoice] = []
    if own is not None:
        patient = names.get(own, {})
        choices.append(
            RecordChoice(own, short_name(patient, "Unnamed"), "self", "full", patient.get("birthDate"), None)
        )
    for grant in sorted(grants, key=lambda g: short_name(names.get(g.patient_id, {}), "Unnamed")):
        choices.append(_choice(grant, names.get(grant.patient_id, {})))
    return choices


def viewed_patient(
    connection: Connection, session_id: str, choices: list[RecordChoice]
) -> RecordChoice | None:
    """The record in view for this session: the one chosen if it is still allowed, else the first
    choice (their own record). None when the user may view no record at all."""
    chosen = connection.execute(
        select(portal_view.c.patient_id).where(portal_view.c.session_id == session_id)
    ).scalar_one_or_none()
    for choice in choices:
        if choice.patient_id == chosen:
            return choice
    return choices[0] if choices else None


def choose(
    connection: Connection, session_id: str, patient_id: str, choices: list[RecordChoice]
) -> RecordChoice:
    """Put another record in view for this session; ValueError when it is not one of the choices."""
    choice = next((c for c in choices if c.patient_id == patient_id), None)
    if choice is None:
        raise ValueError("not a record this account may view")
    connection.execute(delete(portal_view).where(portal_view.c.session_id == session_id))
    connection.execute(
        insert(portal_view).values(
            session_id=session_id, patient_id=patient_id, chosen=format_instant(clock.now())
        )
    )
    return choice


def forget(connection: Connection, session_id: str) -> None:
    """Drop the session's choice (it fell back to the user's own record)."""
    connection.execute(delete(portal_view).where(portal_view.c.session_id == session_id))


def _patients(
    connection: Connection, definitions: Definitions, settings: Settings, ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Name and birth date of the people on the switcher. Read as a system lookup: the user is
    entitled to these records (the grants above), and what they open is audited by the page."""
    now = time.monotonic()
    found = {i: hit[1] for i in ids if (hit := _NAMES.get(i)) is not None and hit[0] > now}
    missing = [i for i in ids if i not in found]
    if missing:
        repo = Repository(connection, definitions, settings, AccessContext.system("portal-record-switcher"))
        page = repo.search(
            SearchRequest("Patient", [("_id", ",".join(missing)), ("_count", str(len(missing)))])
        )
        if len(_NAMES) > _NAMES_MAX:
            _NAMES.clear()
        for stored in page.matches:
            patient = stored.parsed()
            shown = {"name": patient.get("name", []), "birthDate": patient.get("birthDate")}
            _NAMES[stored.id] = (now + _NAMES_SECONDS, shown)
            found[stored.id] = shown
    return found


def _choice(grant: ProxyGrant, patient: dict[str, Any]) -> RecordChoice:
    return RecordChoice(
        grant.patient_id,
        short_name(patient, "Unnamed"),
        grant.kind,
        grant.access,
        patient.get("birthDate") or grant.birth_date,
        grant.ends,
    )
