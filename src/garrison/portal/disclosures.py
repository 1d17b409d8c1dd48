"""Who viewed my record: the accounting of disclosures (45 CFR 164.528; ONC 170.315(d)(11)) in
plain words, for the record in view.

Who may see it: the record's owner, and a parent or guardian of a child under 13 (the child's
personal representative, who sees the whole record anyway). Not the parent of a 13-to-17-year-old:
the list would show, for example, that a behavioral-health clinician opened the record, which is
exactly what adolescent confidentiality keeps from the parent. Not an adult someone shared their
record with either: that is access to the record, not the right to its accounting.

The list comes from the audit trail (`garrison.audit.reports.accounting_of_disclosures`, which
already leaves out the patient's own accesses). Looking at this page is audited too
(`portal:disclosures:read`) but never listed as a disclosure: it is the accounting itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select

from garrison import clock
from garrison.audit.records import Outcome
from garrison.audit.reports import Disclosure, accounting_of_disclosures
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.audit_trail import access_records
from garrison.fhir.repository import Repository
from garrison.identity.tables import account
from garrison.oauth.tables import oauth_client
from garrison.portal.record_text import read_many, resource_name
from garrison.portal.viewing import RecordChoice

DEFAULT_DAYS = 90
MAX_DAYS = 6 * 366  # an accounting covers up to six years (164.528(a))
PER_PAGE = 25
OWN_ACTION = "portal:disclosures:read"

ROLE_WORDS = {
    "physician": "Doctor or other prescriber",
    "nurse": "Nurse",
    "pharmacist": "Pharmacist",
    "front_desk": "Front desk (appointments and check-in)",
    "him": "Medical records staff",
    "privacy_officer": "Privacy officer",
    "analyst": "Population health analyst",
    "administrator": "System administrator",
    "patient": "Patient",
    "proxy": "Family member or someone you shared your record with",
    "system": "Automatic process or connected system",
    "client": "Connected app",
    "anonymous": "Someone who was not signed in",
}
# https://terminology.hl7.org/CodeSystem-v3-ActReason.html
PURPOSE_WORDS = {
    "TREAT": "Your care",
    "ETREAT": "Emergency access (break-the-glass)",
    "HOPERAT": "Running the health service",
    "PATRQT": "At your request",
    "FAMRQT": "At your family's request",
    "HPAYMT": "Payment",
    "PUBHLTH": "Public health",
    "HRESCH": "Research",
    "HLEGAL": "Legal",
    "HSYSADMIN": "System administration",
}
TYPE_WORDS = {
    "*": "everything in the record",
    "Patient": "personal details",
    "Observation": "results and vital signs",
    "DiagnosticReport": "test reports",
    "Condition": "health problems",
    "MedicationRequest": "prescriptions",
    "MedicationStatement": "medicines",
    "MedicationDispense": "medicines dispensed",
    "AllergyIntolerance": "allergies",
    "Immunization": "immunizations",
    "Procedure": "procedures",
    "Encounter": "visits",
    "DocumentReference": "documents and notes",
    "Composition": "documents and notes",
    "Appointment": "appointments",
    "Communication": "messages",
    "CarePlan": "care plans",
    "Goal": "goals",
    "CareTeam": "care team",
    "Coverage": "insurance coverage",
    "RelatedPerson": "family and contacts",
    "Consent": "sharing choices",
    "Task": "requests",
}


@dataclass(frozen=True, slots=True)
class DisclosureLine:
    """One access in plain words."""

    when: datetime
    who: str
    role: str
    what: str
    data: str  # what part of the record ("results and vital signs (3)"), or ""
    purpose: str
    outcome: Outcome

    @property
    def refused(self) -> bool:
        return self.outcome != "success"


@dataclass(frozen=True, slots=True)
class DisclosureReport:
    lines: list[DisclosureLine]
    total: int
    page: int
    pages: int
    since: date
    until: date  # the last day included


def may_see_disclosures(choice: RecordChoice) -> bool:
    """The record's owner, or a guardian with full access (a child under 13): see the docstring."""
    return choice.is_self or (choice.relationship == "guardian" and choice.access == "full")


def date_range(since: date | None, until: date | None) -> tuple[date, date]:
    """The days to list, checked: the last 90 days by default, at most six years, not reversed."""
    today = clock.now().date()
    until = until or today
    since = since or until - timedelta(days=DEFAULT_DAYS)
    if since > until:
        raise BadRequest("The start date must be on or before the end date.")
    if (until - since).days > MAX_DAYS:
        raise BadRequest("Choose at most six years at a time.")
    return since, until


def disclosure_report(
    repo: Repository,
    choice: RecordChoice,
    *,
    since: date | None = None,
    until: date | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> DisclosureReport:
    """Who viewed, changed, exported or tried to reach the record in view, newest first."""
    if choice.patient_id != repo.context.patient:
        raise Forbidden("That is not the record in view.")
    if not may_see_disclosures(choice):
        raise Forbidden(
            "Only the person whose record this is (or the parent of a child under 13) can see who viewed it."
        )
    first, last = date_range(since, until)
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    found = [
        d
        for d in accounting_of_disclosures(repo.connection, choice.patient_id, since=start, until=end)
        if d.action != OWN_ACTION
    ]
    pages = max(1, -(-len(found) // per_page))
    page = min(max(1, page), pages)
    shown = found[(page - 1) * per_page : page * per_page]
    names = actor_names(repo, {d.actor for d in shown})
    lines = [_line(d, names) for d in shown]
    if repo.context.audited:
        detail = {"since": first.isoformat(), "until": last.isoformat(), "page": page}
        repo.audit.extend(access_records(repo.context, OWN_ACTION, (), detail))
    return DisclosureReport(lines, len(found), page, pages, first, last)


def _line(disclosure: Disclosure, names: dict[str, str]) -> DisclosureLine:
    what = disclosure.description
    if disclosure.outcome == "denied":
        what = f"tried, and was refused ({what})"
    elif disclosure.outcome == "failed":
        what = f"tried, but it did not work ({what})"
    role = disclosure.role
    if role in ("patient", "proxy"):
        purpose = "Acting for you through the patient portal"
    else:
        purpose = PURPOSE_WORDS.get(
            disclosure.purpose_of_use or "", disclosure.purpose_of_use or "Not stated"
        )
    return DisclosureLine(
        when=disclosure.recorded,
        who=names.get(disclosure.actor, disclosure.actor),
        role=ROLE_WORDS.get(role, role.replace("_", " ").capitalize()),
        what=what,
        data=data_words(disclosure.entities),
        purpose=purpose,
        outcome=disclosure.outcome,
    )


def data_words(entities: Iterable[str]) -> str:
    """ "results and vital signs (3), visits (1)" from references like "Observation/7/_history/2"."""
    counts: Counter[str] = Counter()
    for reference in entities:
        resource_type = reference.split("/", 1)[0]
        counts[TYPE_WORDS.get(resource_type, "other parts of the record")] += 1
    return ", ".join(f"{words} ({count})" for words, count in counts.most_common())


def actor_names(repo: Repository, actors: set[str]) -> dict[str, str]:
    """Names for audit actors: "You"; staff by their Practitioner name; apps by their registered
    name; everyone else by the name on their Garrison account (45 CFR 164.528(b)(2)(ii) asks for
    the name of whoever received the information)."""
    names: dict[str, str] = {}
    if repo.context.actor in actors:
        names[repo.context.actor] = "You"
    practitioners = [a.split("/", 1)[1] for a in actors if a.startswith("Practitioner/") and a not in names]
    for (_, practitioner_id), found in read_many(repo, [("Practitioner", i) for i in practitioners]).items():
        name = resource_name(found)
        if name:
            names[f"Practitioner/{practitioner_id}"] = name
    clients = [a.removeprefix("client/") for a in actors if a.startswith("client/")]
    if clients:
        rows = repo.connection.execute(
            select(oauth_client.c.client_id, oauth_client.c.name).where(oauth_client.c.client_id.in_(clients))
        )
        names.update({f"client/{row.client_id}": f"The app “{row.name}”" for row in rows})
    for actor in actors:
        if actor.startswith("system/"):
            names.setdefault(actor, "Garrison (an automatic process)")
    rest = sorted(a for a in actors if a not in names and not a.startswith("account/"))
    if rest:
        rows = repo.connection.execute(
            select(account.c.fhir_user, account.c.display_name).where(account.c.fhir_user.in_(rest))
        )
        names.update({row.fhir_user: row.display_name for row in rows})
    accounts = [a.removeprefix("account/") for a in actors if a.startswith("account/") and a not in names]
    if accounts:
        rows = repo.connection.execute(
            select(account.c.id, account.c.display_name).where(account.c.id.in_(accounts))
        )
        names.update({f"account/{row.id}": row.display_name for row in rows})
    for actor in actors:
        if actor not in names:
            names[actor] = "A staff member" if actor.startswith("Practitioner/") else "Someone with access"
    return names
