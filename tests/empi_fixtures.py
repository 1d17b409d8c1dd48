"""Shared material for the patient-index tests: one family with every hard case, and loaders.

The Carter family lives at one address with one phone: sponsor John Michael Carter, his wife
Maria (born Lopez), twin daughters Ava and Emma, and John Michael Carter Jr. All synthetic.
"""

from __future__ import annotations

import copy
from typing import Any

from garrison.beneficiaries import vocabulary
from garrison.empi.synthetic import synthetic_population
from garrison.fhir.repository import Repository

SPONSOR_EDIPI = "1234567890"


def person(
    pid: str,
    given: list[str],
    family: str,
    birth: str,
    sex: str,
    *,
    edipi: str | None,
    fmp: str,
    suffix: str | None = None,
    maiden: str | None = None,
    line: str = "418 Maple Drive",
    postal: str = "76544",
    phone: str = "254-555-0142",
) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official", "family": family, "given": given}
    if suffix:
        name["suffix"] = [suffix]
    names = [name]
    if maiden:
        names.append({"use": "maiden", "family": maiden, "given": given[:1]})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "extension": [
            {
                "url": vocabulary.SPONSOR,
                "extension": [
                    {"url": "edipi", "valueString": SPONSOR_EDIPI},
                    {"url": "fmp", "valueCode": fmp},
                ],
            }
        ],
        "active": True,
        "name": names,
        "telecom": [{"system": "phone", "value": phone, "use": "home"}],
        "gender": sex,
        "birthDate": birth,
        "address": [
            {"use": "home", "line": [line], "city": "Fort Cavazos", "state": "TX", "postalCode": postal}
        ],
    }
    if edipi:
        patient["identifier"] = [{"system": vocabulary.EDIPI, "value": edipi}]
    return patient


def carter_family() -> dict[str, dict[str, Any]]:
    return {
        "john": person(
            "carter-john",
            ["John", "Michael"],
            "Carter",
            "1980-03-11",
            "male",
            edipi=SPONSOR_EDIPI,
            fmp=vocabulary.SPONSOR_FMP,
        ),
        "maria": person(
            "carter-maria",
            ["Maria"],
            "Carter",
            "1982-07-02",
            "female",
            edipi="2345678901",
            fmp=vocabulary.SPOUSE_FMP,
            maiden="Lopez",
        ),
        "ava": person("carter-ava", ["Ava"], "Carter", "2012-05-09", "female", edipi="3456789012", fmp="01"),
        "emma": person(
            "carter-emma", ["Emma"], "Carter", "2012-05-09", "female", edipi="4567890123", fmp="02"
        ),
        "junior": person(
            "carter-junior",
            ["John", "Michael"],
            "Carter",
            "2015-08-21",
            "male",
            edipi="5678901234",
            fmp="03",
            suffix="Jr.",
        ),
    }


def registration_of(patient: dict[str, Any]) -> dict[str, Any]:
    """A fresh registration form for the same person: no id, as a registrar would type it."""
    copied = copy.deepcopy(patient)
    copied.pop("id", None)
    return copied


def load(repo: Repository, patients: list[dict[str, Any]]) -> None:
    """Store resources with the ids they carry (update-as-create)."""
    with repo.deferred_writes():
        for resource in patients:
            repo.update(resource["resourceType"], resource["id"], resource)


def load_neighbours(repo: Repository, people: int = 100, seed: int = 11) -> list[dict[str, Any]]:
    """Other synthetic families, so that matching works against a population, not a handful."""
    patients = synthetic_population(people, seed=seed, duplicate_rate=0.0).patients
    load(repo, patients)
    return patients


def clinical_records(patient_id: str, tag: str) -> list[dict[str, Any]]:
    """A small chart for one patient: each resource references the patient in another way."""
    subject = {"reference": f"Patient/{patient_id}"}
    encounter_id = f"enc-{tag}"
    return [
        {
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
        },
        {
            "resourceType": "Observation",
            "id": f"obs-{tag}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{encounter_id}"},
            "performer": [{"reference": f"Patient/{patient_id}"}],
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        },
        {
            "resourceType": "Condition",
            "id": f"cond-{tag}",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {"text": "Asthma"},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{encounter_id}"},
        },
        {
            "resourceType": "RelatedPerson",
            "id": f"rp-{tag}",
            "patient": subject,
            "name": [{"family": "Example", "given": ["Proxy"]}],
        },
    ]


def current_contents(repo: Repository, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Current content of each resource without meta.versionId and meta.lastUpdated."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource_type, resource_id in keys:
        content = repo.read(resource_type, resource_id).parsed()
        meta = {k: v for k, v in content.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        if meta:
            content["meta"] = meta
        found[(resource_type, resource_id)] = content
    return found


def dangling_references(repo: Repository) -> list[tuple[str, str, str, str]]:
    """Indexed local references whose target is not a current resource."""
    from sqlalchemy import and_, select

    from garrison.db.schema import resource, search_reference

    repo.flush()
    r = search_reference.c
    query = (
        select(r.resource_type, r.resource_id, r.target_type, r.target_id)
        .outerjoin(
            resource,
            and_(
                resource.c.resource_type == r.target_type,
                resource.c.id == r.target_id,
                resource.c.deleted.is_(False),
            ),
        )
        .where(r.target_id.is_not(None), r.target_type.is_not(None), resource.c.id.is_(None))
    )
    return [tuple(row) for row in repo.connection.execute(query)]
