"""Whom a patient may write to, and which staff pool a new thread lands in.

Choices (what a patient portal offers, read through the patient's own Repository, so a proxy
never learns of a clinic behind an adolescent-confidential visit):
- the patient's primary care team: CareTeam with category LOINC LA28865-6 ("Longitudinal
  care-coordination focused care team", https://hl7.org/fhir/R4/careteam.html). Teams that are
  active, proposed or suspended are offered; when every team has ended, the latest is still
  offered (the facility's triage nurses answer while the patient is reassigned);
- each clinic the patient was seen in: an Encounter's serviceProvider (the facility) and
  serviceType (Garrison's service code) name the facility's HealthcareService for that service;
  without one, the facility itself. Emergency and urgent care are not offered (nobody there
  answers portal messages), nor civilian TRICARE network providers (they do not use Garrison),
  nor a facility's primary care clinic where the patient's own primary care team works.

Routing never drops a message: a team or clinic that cannot take it sends it to the facility's
named triage pool, and a facility that is unknown or closed to the enterprise-wide
"Unrouted patient messages" queue. The Destination says which, and why, so the patient and the
staff can both see where the message went.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from garrison.beneficiaries.vocabulary import FACILITY_KIND_SYSTEM, HEALTHCARE_SERVICE_SYSTEM, FacilityKind
from garrison.clock import now
from garrison.errors import BadRequest, Forbidden, GarrisonError
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.messaging.model import UNROUTED_QUEUE, Choice, Destination, PoolGroup, ThreadRow, triage_queue

LOINC = "http://loinc.org"
PRIMARY_CARE_TEAM = "LA28865-6"
# https://hl7.org/fhir/R4/valueset-care-team-status.html: these still look after the patient.
_CURRENT_TEAM = frozenset({"proposed", "active", "suspended"})
_NOT_OFFERED_SERVICES = frozenset({"emergency", "urgent-care"})
_PRIMARY_CARE_SERVICE = "primary-care"
_MAX_ENCOUNTERS = "500"


@dataclass
class _Candidates:
    offered: list[Choice] = field(default_factory=list)
    allowed: dict[str, Choice] = field(default_factory=dict)  # every choice that may be routed


def patient_in_view(repo: Repository) -> str:
    patient = repo.context.patient
    if patient is None:
        raise Forbidden("Secure messages are written from a patient's record")
    return patient


def message_choices(repo: Repository) -> list[Choice]:
    """What the compose page offers: primary care team(s) first, then clinics by name."""
    return _candidates(repo).offered


def resolve_choice(repo: Repository, reference: str) -> Choice:
    """The choice named by `reference`, if the patient in view may write to it (BadRequest
    otherwise). A team that ended since the page was shown is still accepted: routing sends
    the message on to the facility's triage pool rather than refusing it."""
    found = _candidates(repo).allowed.get(reference)
    if found is None:
        raise BadRequest("Choose who your message is for from the list.")
    return found


def route(repo: Repository, choice: Choice) -> Destination:
    """The pool a new thread addressed to `choice` lands in."""
    kind, _, ident = choice.reference.partition("/")
    if kind == "CareTeam":
        return _route_team(repo, ident, choice.label)
    if kind == "HealthcareService":
        return _route_service(repo, ident, choice.label)
    return _route_facility(repo, ident)


def pools_for_staff(repo: Repository, patient: str, facility: str | None) -> list[PoolGroup]:
    """The care-team pools staff may move a conversation about `patient` to (read through the
    staff member's Repository): the patient's primary care teams that take messages now, then
    the staffed clinics (HealthcareServices) of the staff member's own facility and of the
    facilities the patient was seen at, grouped by facility. As for the patient's own choices,
    emergency and urgent care, closed clinics and facilities and civilian network providers are
    left out; so is any team or clinic that routing would pass on to a triage pool (a move must
    land where somebody answers)."""
    groups: list[PoolGroup] = []
    teams: list[Destination] = []
    for team in _primary_care_teams(repo, patient):
        if team.get("status") != "active":
            continue
        destination = _route_team(repo, str(team["id"]), _team_choice(team, None).label)
        if destination.kind == "team":
            teams.append(destination)
    if teams:
        groups.append(PoolGroup("The patient's primary care team", teams))
    services: dict[str, dict[str, Any]] = {}
    if facility:
        at_facility = [("organization", f"Organization/{facility}"), ("active", "true")]
        services.update(_by_id(repo, "HealthcareService", at_facility))
    seen = [
        c.reference.removeprefix("HealthcareService/")
        for c in _clinics(repo, patient, set(), {})
        if c.reference.startswith("HealthcareService/")
    ]
    missing = [i for i in seen if i not in services]
    if missing:
        services.update(_by_id(repo, "HealthcareService", [("_id", ",".join(missing))]))
    candidates = {
        ident: service
        for ident, service in services.items()
        if service.get("active") is not False
        and _service_code(service.get("type")) not in _NOT_OFFERED_SERVICES
        and _org_id(service.get("providedBy")) is not None
    }
    if not candidates:
        return groups
    org_ids = sorted({str(_org_id(s.get("providedBy"))) for s in candidates.values()})
    orgs = _by_id(repo, "Organization", [("_id", ",".join(org_ids))])
    staffed = _staffed_services(repo, sorted(candidates))
    by_facility: dict[str, list[Destination]] = {}
    for ident, service in candidates.items():
        org_id = str(_org_id(service.get("providedBy")))
        org = orgs.get(org_id)
        if org is None or org.get("active") is False or _is_network_provider(org) or ident not in staffed:
            continue
        facility_name = str(org.get("name") or "the facility")
        code = _service_code(service.get("type")) or "Clinic"
        name = str(service.get("name") or f"{code}, {facility_name}")
        by_facility.setdefault(facility_name, []).append(
            Destination("clinic", f"HealthcareService/{ident}", name, org_id)
        )
    for facility_name in sorted(by_facility, key=str.casefold):
        pools = sorted(by_facility[facility_name], key=lambda d: d.name.casefold())
        groups.append(PoolGroup(f"Clinics at {facility_name}", pools))
    return groups


def follow_up_destination(repo: Repository, row: ThreadRow) -> tuple[Choice, Destination]:
    """Where a follow-up to the closed conversation `row` goes: the team or clinic that last
    held it (staff may have moved it there), checked again by routing; a conversation that sat
    in a triage pool or the unrouted queue is routed again as the patient first addressed it
    (it may reach the team now, or it lands in the same named pool again)."""
    if row.pool_kind in ("team", "clinic") and row.pool_ref:
        kind: Literal["team", "clinic"] = "team" if row.pool_kind == "team" else "clinic"
        choice = Choice(row.pool_ref, row.pool_name, kind)
    else:
        kind = "team" if row.requested_ref.startswith("CareTeam/") else "clinic"
        choice = Choice(row.requested_ref, row.requested_name, kind)
    return choice, route(repo, choice)


# ------------------------------------------------------------------------------- choices


def _candidates(repo: Repository) -> _Candidates:
    patient = patient_in_view(repo)
    found = _Candidates()
    teams = _primary_care_teams(repo, patient)
    current = [t for t in teams if t.get("status") in _CURRENT_TEAM]
    for team in teams:
        choice = _team_choice(team, None)
        found.allowed[choice.reference] = choice
    if current:
        offered_teams = current
        note = None
    else:
        # Every team has ended: keep the latest on offer so the patient can still write.
        latest = sorted(teams, key=lambda t: str((t.get("period") or {}).get("start", "")))[-1:]
        offered_teams = latest
        note = "Your primary care team is being reassigned; the clinic's nurses will answer."
    for team in offered_teams:
        choice = _team_choice(team, note)
        found.offered.append(choice)
        found.allowed[choice.reference] = choice
    team_facilities = {_org_id(t.get("managingOrganization")) for t in current}
    clinics = _clinics(repo, patient, team_facilities, found.allowed)
    found.offered.extend(sorted(clinics, key=lambda c: c.label.casefold()))
    return found


def _primary_care_teams(repo: Repository, patient: str) -> list[dict[str, Any]]:
    page = repo.search(
        SearchRequest(
            "CareTeam",
            [
                ("subject", f"Patient/{patient}"),
                ("category", f"{LOINC}|{PRIMARY_CARE_TEAM}"),
                ("_count", "50"),
                ("_sort", "_id"),
            ],
        )
    )
    return [m.parsed() for m in page.matches if m.parsed().get("status") != "entered-in-error"]


def _team_choice(team: dict[str, Any], note: str | None) -> Choice:
    name = team.get("name")
    if not name:
        org = _first(team.get("managingOrganization"))
        where = org.get("display") if org else None
        name = f"Primary care team, {where}" if where else "Primary care team"
    return Choice(f"CareTeam/{team['id']}", str(name), "team", note)


def _clinics(
    repo: Repository, patient: str, team_facilities: set[str | None], allowed: dict[str, Choice]
) -> list[Choice]:
    page = repo.search(
        SearchRequest(
            "Encounter",
            [("patient", f"Patient/{patient}"), ("_count", _MAX_ENCOUNTERS), ("_sort", "-date")],
        )
    )
    seen: dict[str, set[str | None]] = {}  # facility id -> service codes (None: no service given)
    shown_as: dict[str, str] = {}
    for match in page.matches:
        encounter = match.parsed()
        provider = encounter.get("serviceProvider") or {}
        org_id = _org_id(provider)
        if org_id is None:
            continue
        if provider.get("display"):
            shown_as.setdefault(org_id, str(provider["display"]))
        seen.setdefault(org_id, set()).add(_service_code(encounter.get("serviceType")))
    if not seen:
        return []
    ids = sorted(seen)
    orgs = _by_id(repo, "Organization", [("_id", ",".join(ids))])
    services = _by_id(
        repo, "HealthcareService", [("organization", ",".join(f"Organization/{i}" for i in ids))]
    )
    by_code: dict[tuple[str, str], dict[str, Any]] = {}
    for service in services.values():
        org_id = _org_id(service.get("providedBy"))
        code = _service_code(service.get("type"))
        if org_id is not None and code is not None:
            by_code.setdefault((org_id, code), service)
    clinics: list[Choice] = []
    for org_id in ids:
        org = orgs.get(org_id)
        if org is not None and _is_network_provider(org):
            continue  # civilian TRICARE network providers do not answer Garrison messages
        facility_name = str(org.get("name") or "") if org else shown_as.get(org_id, "")
        whole_facility = False
        for code in sorted(seen[org_id], key=lambda c: c or ""):
            if code in _NOT_OFFERED_SERVICES:
                continue
            if code == _PRIMARY_CARE_SERVICE and org_id in team_facilities:
                continue  # the patient's own primary care team is already on offer
            found = by_code.get((org_id, code)) if code else None
            if found is None:
                whole_facility = True
                continue
            service = found
            label = str(service.get("name") or f"{code}, {facility_name}")
            choice = Choice(f"HealthcareService/{service['id']}", label, "clinic")
            allowed[choice.reference] = choice
            if service.get("active") is not False:
                clinics.append(choice)
            else:
                whole_facility = True
        if whole_facility:
            choice = Choice(
                f"Organization/{org_id}", facility_name or "The facility you were seen at", "clinic"
            )
            allowed[choice.reference] = choice
            clinics.append(choice)
    return clinics


# ------------------------------------------------------------------------------- routing


def _route_team(repo: Repository, team_id: str, label: str) -> Destination:
    team = _read(repo, "CareTeam", team_id)
    org_id = _org_id(team.get("managingOrganization")) if team else None
    org = _read(repo, "Organization", org_id) if org_id else None
    if team is None or org is None or org.get("active") is False:
        return _unrouted("The care team's facility is not known, or no longer takes messages.")
    facility = str(org.get("name") or label)
    if team.get("status") != "active":
        return _triage(org, facility, "The care team is not active.")
    if not _current_members(repo, team):
        return _triage(org, facility, "The care team has no members.")
    return Destination("team", f"CareTeam/{team_id}", label, str(org["id"]))


def _route_service(repo: Repository, service_id: str, label: str) -> Destination:
    service = _read(repo, "HealthcareService", service_id)
    org_id = _org_id(service.get("providedBy")) if service else None
    org = _read(repo, "Organization", org_id) if org_id else None
    if service is None or org is None or org.get("active") is False:
        return _unrouted("The clinic's facility is not known, or no longer takes messages.")
    facility = str(org.get("name") or label)
    if service.get("active") is False:
        return _triage(org, facility, "The clinic is closed.")
    staff = repo.search(
        SearchRequest(
            "PractitionerRole",
            [("service", f"HealthcareService/{service_id}"), ("active", "true"), ("_count", "1")],
        )
    )
    if not staff.matches:
        return _triage(org, facility, "Nobody currently answers messages for this clinic.")
    return Destination("clinic", f"HealthcareService/{service_id}", label, str(org["id"]))


def _route_facility(repo: Repository, org_id: str) -> Destination:
    org = _read(repo, "Organization", org_id)
    if org is None or org.get("active") is False or _is_network_provider(org):
        return _unrouted("The facility is not known, or does not take messages through Garrison.")
    # A message to the facility as a whole is its triage pool's to answer: that is routed, not
    # a failure, so there is no note.
    return _triage(org, str(org.get("name") or "the facility"), None)


def _triage(org: dict[str, Any], facility_name: str, note: str | None) -> Destination:
    return Destination(
        "triage", f"Organization/{org['id']}", triage_queue(facility_name), str(org["id"]), note
    )


def _unrouted(note: str) -> Destination:
    return Destination("unrouted", None, UNROUTED_QUEUE, None, note)


def _current_members(repo: Repository, team: dict[str, Any]) -> list[str]:
    """Members whose participation has not ended; PractitionerRoles must still be active."""
    today = now().date().isoformat()
    members: list[str] = []
    for participant in team.get("participant") or []:
        reference = str((participant.get("member") or {}).get("reference", ""))
        ended = str((participant.get("period") or {}).get("end", "9999"))[:10]
        if reference and ended >= today:
            members.append(reference)
    roles = [m.removeprefix("PractitionerRole/") for m in members if m.startswith("PractitionerRole/")]
    if roles:
        active = _by_id(repo, "PractitionerRole", [("_id", ",".join(roles)), ("active", "true")])
        members = [m for m in members if not m.startswith("PractitionerRole/") or m[17:] in active]
    return members


def _staffed_services(repo: Repository, service_ids: list[str]) -> set[str]:
    """Those of the HealthcareServices somebody (an active PractitionerRole) works in."""
    page = repo.search(
        SearchRequest(
            "PractitionerRole",
            [
                ("service", ",".join(f"HealthcareService/{i}" for i in service_ids)),
                ("active", "true"),
                ("_count", "1000"),
            ],
        )
    )
    wanted = set(service_ids)
    found: set[str] = set()
    for match in page.matches:
        for ref in match.parsed().get("healthcareService") or []:
            ident = str(ref.get("reference", "")).removeprefix("HealthcareService/")
            if ident in wanted:
                found.add(ident)
    return found


# ------------------------------------------------------------------------------- helpers


def _read(repo: Repository, resource_type: str, resource_id: str | None) -> dict[str, Any] | None:
    if not resource_id:
        return None
    try:
        return repo.read(resource_type, resource_id).parsed()
    except GarrisonError:
        return None  # missing, deleted or not visible: all mean "cannot route there"


def _by_id(repo: Repository, resource_type: str, params: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    page = repo.search(SearchRequest(resource_type, [*params, ("_count", "1000")]))
    return {m.id: m.parsed() for m in page.matches}


def _first(value: Any) -> dict[str, Any] | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, dict) else None


def _org_id(value: Any) -> str | None:
    ref = _first(value)
    reference = str(ref.get("reference", "")) if ref else ""
    return reference.removeprefix("Organization/") if reference.startswith("Organization/") else None


def _service_code(concepts: Any) -> str | None:
    """Garrison's service code in a CodeableConcept or a list of them."""
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            if coding.get("system") == HEALTHCARE_SERVICE_SYSTEM and coding.get("code"):
                return str(coding["code"])
    return None


def _is_network_provider(org: dict[str, Any]) -> bool:
    return any(
        coding.get("system") == FACILITY_KIND_SYSTEM and coding.get("code") == FacilityKind.NETWORK.value
        for concept in org.get("type") or []
        for coding in concept.get("coding") or []
    )
