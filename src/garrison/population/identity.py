"""Who a beneficiary is, in FHIR: Patient, the sponsor as RelatedPerson, TRICARE Coverage, the PCM team.

The representation is the one `garrison.beneficiaries.vocabulary` describes: the person's own DoD ID
(EDIPI), the VA ICN for those enrolled with the VA, one medical record number per facility they
were seen at, the sponsor extension (sponsor's EDIPI, family member prefix, sponsor's Patient),
beneficiary category, and for service members branch, pay grade, rank and unit.
"""

from __future__ import annotations

from datetime import date

from garrison.beneficiaries.vocabulary import (
    BENEFICIARY_CATEGORY,
    BENEFICIARY_CATEGORY_DISPLAY,
    BENEFICIARY_CATEGORY_SYSTEM,
    EDIPI,
    PAY_GRADE,
    PAY_GRADE_SYSTEM,
    RANK,
    SERVICE_BRANCH,
    SERVICE_BRANCH_DISPLAY,
    SERVICE_BRANCH_SYSTEM,
    SPONSOR,
    SPONSOR_FMP,
    TRICARE_PLAN_DISPLAY,
    TRICARE_PLAN_SYSTEM,
    UNIT,
    V3_ROLE_CODE,
    VA_ICN,
    mrn_system,
)
from garrison.network import StaffRole
from garrison.population.builders import Json, concept, ref
from garrison.population.codes import (
    CARE_TEAM_CATEGORY,
    COVERAGE_CLASS,
    MARITAL_STATUS,
    SNOMED,
    SUBSCRIBER_RELATIONSHIP,
)
from garrison.population.ids import IdFactory
from garrison.population.people import CoverageSpan, Person, Role
from garrison.population.sites import Clinician, Site

IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
_MARITAL = {"M": "Married", "S": "Never Married", "D": "Divorced"}
_RELATIONSHIP_DISPLAY = {"self": "Self", "spouse": "Spouse", "child": "Child"}


def official_name(person: Person) -> Json:
    given = [person.given] + ([person.middle] if person.middle else [])
    name: Json = {"use": "official", "family": person.family_name, "given": given}
    if person.suffix:
        name["suffix"] = [person.suffix]
    if person.name_changed is not None:
        name["period"] = {"start": person.name_changed.isoformat()}
    return name


def display_name(person: Person) -> str:
    return " ".join(p for p in (person.given, person.family_name, person.suffix) if p)


def email(person: Person) -> str:
    local = f"{person.given}.{person.family_name}".lower().replace(" ", "").replace("'", "")
    return f"{local}{person.number % 1000}@example.com"


def _sponsor_extension(person: Person) -> Json | None:
    """Sponsor's EDIPI, family member prefix and (for family members) the sponsor's Patient."""
    sponsor = person.sponsor
    if sponsor is None or (person.divorced is not None and person.role is Role.SPOUSE):
        return None  # a former spouse no longer draws benefits through the sponsor
    parts: list[Json] = [
        {"url": "edipi", "valueString": sponsor.edipi},
        {"url": "fmp", "valueCode": person.fmp},
    ]
    if sponsor is not person:
        parts.append(
            {"url": "patient", "valueReference": ref("Patient", sponsor.patient_id, display_name(sponsor))}
        )
    return {"url": SPONSOR, "extension": parts}


def _service_extensions(person: Person) -> list[Json]:
    career = person.career
    if career is None or person.sponsor is not person:
        return []
    return [
        {
            "url": SERVICE_BRANCH,
            "valueCoding": {
                "system": SERVICE_BRANCH_SYSTEM,
                "code": career.branch.value,
                "display": SERVICE_BRANCH_DISPLAY[career.branch],
            },
        },
        {"url": PAY_GRADE, "valueCoding": {"system": PAY_GRADE_SYSTEM, "code": career.grade.code}},
        {"url": RANK, "valueString": career.grade.rank},
        {"url": UNIT, "valueString": career.unit},
    ]


def identifiers(person: Person, mrns: list[tuple[Site, str]]) -> list[Json]:
    found: list[Json] = [
        {
            "use": "official",
            "type": concept(IDENTIFIER_TYPE, "MI", "Military ID number"),
            "system": EDIPI,
            "value": person.edipi,
        }
    ]
    if person.icn:
        found.append(
            {
                "use": "secondary",
                "type": concept(IDENTIFIER_TYPE, "NI", "National unique individual identifier"),
                "system": VA_ICN,
                "value": person.icn,
            }
        )
    for site, mrn in mrns:
        found.append(
            {
                "use": "usual",
                "type": concept(IDENTIFIER_TYPE, "MR", "Medical record number"),
                "system": mrn_system(site.code),
                "value": mrn,
                "assigner": ref("Organization", site.organization_id, site.name),
            }
        )
    return found


def addresses(person: Person, as_of: date) -> list[Json]:
    """The current home, then up to two earlier ones (use "old", with their periods)."""
    found: list[Json] = []
    for stay in reversed(person.stays[-3:]):
        if stay.start > as_of:
            continue
        address = dict(stay.address)
        if stay.end is not None:
            address["use"] = "old"
            address["period"] = {**address["period"], "end": stay.end.isoformat()}
        found.append(address)
    return found


def patient(
    person: Person, *, as_of: date, mrns: list[tuple[Site, str]], pcm: tuple[Site, Clinician] | None
) -> Json:
    extensions: list[Json] = []
    sponsor = _sponsor_extension(person)
    if sponsor is not None:
        extensions.append(sponsor)
    if person.category is not None:
        extensions.append(
            {
                "url": BENEFICIARY_CATEGORY,
                "valueCoding": {
                    "system": BENEFICIARY_CATEGORY_SYSTEM,
                    "code": person.category.value,
                    "display": BENEFICIARY_CATEGORY_DISPLAY[person.category],
                },
            }
        )
    extensions.extend(_service_extensions(person))
    names = [official_name(person)]
    if person.birth_name is not None and person.name_changed is not None:
        maiden = {**official_name(person), "use": "maiden", "family": person.birth_name}
        maiden["period"] = {"end": person.name_changed.isoformat()}
        names.append(maiden)
    married = person.married is not None and (person.divorced is None or person.married > person.divorced)
    marital = "M" if married else "D" if person.divorced is not None else "S"
    body: Json = {"resourceType": "Patient", "id": person.patient_id}
    if extensions:
        body["extension"] = extensions
    body["identifier"] = identifiers(person, mrns)
    body["active"] = True
    body["name"] = names
    telecom: list[Json] = [{"system": "phone", "value": person.phone, "use": "mobile"}]
    if person.age_on(as_of) >= 16:
        telecom.append({"system": "email", "value": email(person), "use": "home"})
    body["telecom"] = telecom
    body["gender"] = person.sex
    body["birthDate"] = person.birth_date.isoformat()
    body["address"] = addresses(person, as_of)
    body["maritalStatus"] = concept(MARITAL_STATUS, marital, _MARITAL[marital])
    if person.twin_of is not None:  # https://hl7.org/fhir/R4/patient.html#multiplebirth: birth order
        body["multipleBirthInteger"] = 1 if person.fmp < person.twin_of.fmp else 2
    if pcm is not None:
        site, clinician = pcm
        body["generalPractitioner"] = [ref("PractitionerRole", clinician.role_id, clinician.name)]
        body["managingOrganization"] = ref("Organization", site.organization_id, site.name)
    return body


def related_sponsor(person: Person, family_sponsor: Person, resource_id: str, as_of: date) -> Json | None:
    """The family's sponsor as related to a family member: spouse, or parent of a child.

    A grown child who enlisted is their own sponsor now, and still the family sponsor's child.
    """
    sponsor = family_sponsor
    if person is sponsor or person.role is Role.SPONSOR:
        return None
    relationships: list[Json] = []
    if person.role is Role.SPOUSE:
        code, display = {"male": ("HUSB", "husband"), "female": ("WIFE", "wife")}[sponsor.sex]
        relationships.append(concept(V3_ROLE_CODE, code, display))
        start = person.married or as_of
    else:
        code, display = {"male": ("FTH", "father"), "female": ("MTH", "mother")}[sponsor.sex]
        relationships.append(concept(V3_ROLE_CODE, code, display))
        if person.age_on(as_of) < 18:  # a parent acts for a minor; at 18 that ends
            relationships.append(concept(V3_ROLE_CODE, "GUARD", "guardian"))
        start = person.birth_date
    period: Json = {"start": start.isoformat()}
    if person.divorced is not None and person.role is Role.SPOUSE:
        period["end"] = person.divorced.isoformat()
    return {
        "resourceType": "RelatedPerson",
        "id": resource_id,
        "identifier": [{"system": EDIPI, "value": sponsor.edipi}],
        "active": "end" not in period,
        "patient": ref("Patient", person.patient_id),
        "relationship": relationships,
        "name": [official_name(sponsor)],
        "telecom": [{"system": "phone", "value": sponsor.phone, "use": "mobile"}],
        "gender": sponsor.sex,
        "birthDate": sponsor.birth_date.isoformat(),
        "address": addresses(sponsor, as_of)[:1],
        "period": period,
    }


def coverage(
    person: Person, span: CoverageSpan, *, resource_id: str, subscriber: Person, payer_id: str, as_of: date
) -> Json:
    """One TRICARE plan period: subscriber is the sponsor, beneficiary the person, payor TRICARE."""
    ended = span.end is not None and span.end <= as_of
    period: Json = {"start": span.start.isoformat()}
    if span.end is not None:
        period["end"] = span.end.isoformat()
    plan = TRICARE_PLAN_DISPLAY[span.plan]
    body: Json = {
        "resourceType": "Coverage",
        "id": resource_id,
        # https://hl7.org/fhir/R4/coverage.html: a plan period that has ended is no longer in force.
        "status": "cancelled" if ended else "active",
        "type": {"coding": [{"system": TRICARE_PLAN_SYSTEM, "code": span.plan.value, "display": plan}]},
        "subscriber": ref("Patient", subscriber.patient_id, display_name(subscriber)),
        "subscriberId": subscriber.edipi,
        "beneficiary": ref("Patient", person.patient_id),
        "dependent": SPONSOR_FMP if span.relationship == "self" else person.former_fmp or person.fmp,
        "relationship": concept(
            SUBSCRIBER_RELATIONSHIP, span.relationship, _RELATIONSHIP_DISPLAY[span.relationship]
        ),
        "period": period,
        "payor": [ref("Organization", payer_id, "TRICARE")],
        "class": [{"type": concept(COVERAGE_CLASS, "plan", "Plan"), "value": span.plan.value, "name": plan}],
    }
    return body


def care_team(person: Person, resource_id: str, pcm: tuple[Site, Clinician], since: date) -> Json:
    """The primary care manager and a nurse of the same clinic (VA: the PACT team)."""
    site, physician = pcm
    nurses = [c for c in site.clinicians if c.staff.role is StaffRole.NURSE]
    # The VA calls its primary care team a PACT (Patient Aligned Care Team).
    name = f"{site.facility.short_name} {'PACT' if site.va and not site.dod else 'primary care'} team"
    participants: list[Json] = [
        {
            "role": [
                {**concept(SNOMED, "446050000", "Primary care physician"), "text": "Primary care manager"}
            ],
            "member": ref("PractitionerRole", physician.role_id, physician.name),
            "period": {"start": since.isoformat()},
        }
    ]
    if nurses:
        nurse = nurses[person.number % len(nurses)]
        participants.append(
            {
                "role": [concept(SNOMED, "224535009", "Registered nurse")],
                "member": ref("PractitionerRole", nurse.role_id, nurse.name),
                "period": {"start": since.isoformat()},
            }
        )
    return {
        "resourceType": "CareTeam",
        "id": resource_id,
        "status": "active",
        "category": [
            concept(CARE_TEAM_CATEGORY, "LA28865-6", "Longitudinal care-coordination focused care team")
        ],
        "name": name,
        "subject": ref("Patient", person.patient_id),
        "period": {"start": since.isoformat()},
        "participant": participants,
        "managingOrganization": [ref("Organization", site.organization_id, site.name)],
    }


def identity_resources(
    person: Person,
    *,
    ids: IdFactory,
    as_of: date,
    mrns: list[tuple[Site, str]],
    pcm: tuple[Site, Clinician] | None,
    family_sponsor: Person,
    payer_id: str,
) -> list[Json]:
    """Patient, RelatedPerson (the sponsor), Coverage periods and CareTeam of one person."""
    found: list[Json] = [patient(person, as_of=as_of, mrns=mrns, pcm=pcm)]
    related = related_sponsor(person, family_sponsor, ids.named("RelatedPerson/sponsor"), as_of)
    if related is not None:
        found.append(related)
    for span in person.coverages:
        subscriber = person if span.relationship == "self" else family_sponsor
        found.append(
            coverage(
                person,
                span,
                resource_id=ids.next("Coverage"),
                subscriber=subscriber,
                payer_id=payer_id,
                as_of=as_of,
            )
        )
    if pcm is not None:
        found.append(care_team(person, ids.named("CareTeam/pcm"), pcm, person.current_stay.start))
    return found
