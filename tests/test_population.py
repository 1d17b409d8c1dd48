"""The synthetic population: deterministic, well-formed families, valid FHIR, planted duplicates.

Most tests generate in memory over the catalogue's facilities (with stand-in resource ids); the
store tests load a population through the bulk path on both databases and search it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from garrison.beneficiaries.vocabulary import EDIPI, SPONSOR, VA_ICN, BeneficiaryCategory, TricarePlan
from garrison.db.engine import read_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.fhir.validation import validator_for
from garrison.network import catalogue
from garrison.network.load import NetworkSummary
from garrison.population.duplicates import transposed, typo
from garrison.population.generate import (
    Population,
    PopulationOptions,
    PopulationStats,
    generate_population,
    write_ndjson,
)
from garrison.population.ids import rng_for
from garrison.population.people import Person
from garrison.population.sites import NEARBY_KM, NetworkView, distance_km, view_of
from garrison.population.truth import ground_truth, look_alikes
from garrison.settings import Settings

AS_OF = date(2026, 11, 26)
Json = dict[str, Any]
Generated = tuple[list[Json], PopulationStats, list[Person]]


@pytest.fixture(scope="module")
def network() -> NetworkView:
    """The catalogue with stand-in ids (no database needed to generate)."""
    facilities = catalogue()
    summary = NetworkSummary(
        organizations={f.code: f"org-{f.code}" for f in facilities},
        locations={f.code: f"loc-{f.code}" for f in facilities if f.has_site},
        services={(f.code, s): f"svc-{f.code}-{s.value}" for f in facilities for s in f.services},
        practitioners={p.key: f"pr-{p.key}" for f in facilities for p in f.practitioners},
        practitioner_roles={p.key: f"role-{p.key}" for f in facilities for p in f.practitioners},
        payer_organization="org-tricare",
    )
    return view_of(summary)


def _read(paths: list[Path]) -> list[Json]:
    return [orjson.loads(line) for path in paths for line in path.open("rb")]


@pytest.fixture(scope="module")
def population(network: NetworkView, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """60 people, one in five with a duplicate registration: resources, stats and the people."""
    options = PopulationOptions(patients=60, seed=11, as_of=AS_OF, duplicates_rate=0.2)
    generator = Population(options, network)
    people: list[Person] = []
    resources: list[Json] = []
    for person, records in generator.records():
        people.append(person)
        resources.extend(records)
    return resources, generator.stats, people


def _by_type(resources: list[Json], kind: str) -> list[Json]:
    return [r for r in resources if r["resourceType"] == kind]


def _sponsor_parts(patient: Json) -> dict[str, Any] | None:
    for extension in patient.get("extension", []):
        if extension["url"] == SPONSOR:
            return {
                part["url"]: part.get("valueString") or part.get("valueCode") or part.get("valueReference")
                for part in extension["extension"]
            }
    return None


def _identifier(patient: Json, system: str) -> str | None:
    return next((i["value"] for i in patient["identifier"] if i["system"] == system), None)


# -- determinism -----------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_resources(network: NetworkView, tmp_path: Path) -> None:
    options = PopulationOptions(patients=30, seed=5, as_of=AS_OF, duplicates_rate=0.1)
    first, stats = write_ndjson(options, network, tmp_path / "a")
    second, _ = write_ndjson(options, network, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert stats.people == 30 and stats.resources > 30 * 20

    other, _ = write_ndjson(PopulationOptions(30, 6, AS_OF, 0.1), network, tmp_path / "c")
    ids = {r["id"] for r in _read(first)}
    other_ids = {r["id"] for r in _read(other)}
    assert not ids & other_ids  # another seed: other people, other ids
    assert (tmp_path / "a" / "Patient.ndjson").read_bytes() != (
        tmp_path / "c" / "Patient.ndjson"
    ).read_bytes()


def test_a_larger_population_starts_with_the_smaller_one(network: NetworkView) -> None:
    small = [r for _, rs in Population(PopulationOptions(15, 9, AS_OF, 0.0), network).records() for r in rs]
    large = [r for _, rs in Population(PopulationOptions(40, 9, AS_OF, 0.0), network).records() for r in rs]
    small_patients = [p["id"] for p in _by_type(small, "Patient")]
    large_patients = [p["id"] for p in _by_type(large, "Patient")]
    # The last family of the small population may be cut short; every earlier one is identical.
    assert large_patients[: len(small_patients) - 3] == small_patients[: len(small_patients) - 3]


# -- validity and references -------------------------------------------------------------------------


def test_every_resource_is_valid_fhir(population: Generated, definitions: Definitions) -> None:
    resources, _, _ = population
    validator = validator_for(definitions)
    problems = {}
    for resource in resources:
        issues = validator.validate(resource)
        if issues:
            problems[f"{resource['resourceType']}/{resource['id']}"] = [i.diagnostics for i in issues[:3]]
    assert problems == {}
    kinds = Counter(r["resourceType"] for r in resources)
    for kind in (
        "Patient",
        "RelatedPerson",
        "Coverage",
        "CareTeam",
        "Encounter",
        "Observation",
        "Condition",
        "MedicationRequest",
        "Immunization",
        "Procedure",
        "Appointment",
        "AllergyIntolerance",
    ):
        assert kinds[kind] > 0, kind


def _references(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_references(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_references(item))
    return found


def test_every_reference_resolves(population: Generated, network: NetworkView) -> None:
    resources, _, _ = population
    known = {f"{r['resourceType']}/{r['id']}" for r in resources}
    for site in network.sites:
        known.add(f"Organization/{site.organization_id}")
        known.add(f"Location/{site.location_id}")
        known.update(f"HealthcareService/{i}" for i in site.service_ids.values())
        for clinician in site.clinicians:
            known.add(f"Practitioner/{clinician.practitioner_id}")
            known.add(f"PractitionerRole/{clinician.role_id}")
    known.add(f"Organization/{network.payer_id}")
    dangling = {ref for r in resources for ref in _references(r) if ref not in known}
    assert dangling == set()


# -- families and demographics ----------------------------------------------------------------------


def test_families_have_one_sponsor_and_consistent_dod_ids(population: Generated) -> None:
    resources, stats, _ = population
    patients = [p for p in _by_type(resources, "Patient") if p["id"] not in stats.duplicate_of]
    by_id = {p["id"]: p for p in patients}
    families: dict[str, list[tuple[Json, dict[str, Any]]]] = defaultdict(list)
    for patient in patients:
        parts = _sponsor_parts(patient)
        if parts is not None:
            families[parts["edipi"]].append((patient, parts))
    assert families
    for sponsor_edipi, members in families.items():
        sponsors = [p for p, parts in members if parts["fmp"] == "20"]
        assert len(sponsors) == 1, sponsor_edipi
        assert _identifier(sponsors[0], EDIPI) == sponsor_edipi
        children = [parts["fmp"] for _, parts in members if parts["fmp"] < "20"]
        assert all(re.fullmatch(r"(0[1-9]|1[0-9])", fmp) for fmp in children)
        assert len(children) == len(set(children))  # birth order numbers are not reused
        for patient, parts in members:
            assert re.fullmatch(r"(0[1-9]|1[0-9]|20|3[0-9])", parts["fmp"])
            if parts["fmp"] != "20":
                target = parts["patient"]["reference"].removeprefix("Patient/")
                assert target == sponsors[0]["id"]
                assert _identifier(by_id[target], EDIPI) == sponsor_edipi
            assert _identifier(patient, EDIPI) is not None
    edipis = [_identifier(p, EDIPI) for p in patients]
    assert len(edipis) == len(set(edipis))  # a DoD ID is one person's


def test_demographics_look_like_the_military(network: NetworkView) -> None:
    generator = Population(PopulationOptions(400, 21, AS_OF, 0.0), network)
    people = [person for person, _ in generator.records()]
    active = [p for p in people if p.category is BeneficiaryCategory.ACTIVE_DUTY and p.is_sponsor]
    assert len(active) > 40
    male = sum(p.sex == "male" for p in active) / len(active)
    assert 0.7 < male < 0.93
    ages = sorted(p.age_on(AS_OF) for p in active)
    assert ages[0] >= 17 and ages[-1] <= 60 and ages[len(ages) // 2] <= 32
    assert all(p.career is not None for p in active)
    enlisted = sum(p.career.grade.code.startswith("E") for p in active if p.career) / len(active)
    assert 0.7 < enlisted < 0.95
    branches = Counter(p.career.branch.value for p in people if p.career is not None)
    assert {"USA", "USN", "USAF", "USMC"} <= set(branches)
    categories = Counter(p.category for p in people)
    for category in BeneficiaryCategory:
        assert categories[category] > 0, category
    for person in people:
        current = [c.plan for c in person.coverages if c.end is None]
        if TricarePlan.FOR_LIFE in current:
            assert person.age_on(AS_OF) >= 65
        if person.category is BeneficiaryCategory.ACTIVE_DUTY and person.is_sponsor:
            assert current == [TricarePlan.PRIME]
        if person.category is BeneficiaryCategory.VETERAN:
            assert person.icn is not None and "V" in person.icn
    assert any(p.twin_of is not None for p in people)
    assert any(p.junior_of is not None for p in people)
    kinds = Counter(e.kind for p in people for e in p.events)
    for kind in ("pcs", "deployed", "retired", "separated", "married", "divorced", "turned-18"):
        assert kinds[kind] > 0, kind


def test_encounters_happen_where_the_patient_lived(population: Generated, network: NetworkView) -> None:
    resources, stats, people = population
    site_of_org = {s.organization_id: s for s in network.sites}
    person_of = {p.patient_id: p for p in people}
    checked = 0
    for encounter in _by_type(resources, "Encounter"):
        patient_id = encounter["subject"]["reference"].removeprefix("Patient/")
        if patient_id in stats.duplicate_of:
            continue  # a stray registration elsewhere, by design
        person = person_of[patient_id]
        site = site_of_org[encounter["serviceProvider"]["reference"].removeprefix("Organization/")]
        assert encounter["location"][0]["location"]["reference"] == f"Location/{site.location_id}"
        day = date.fromisoformat(encounter["period"]["start"][:10])
        stay = person.stay_on(day)
        assert stay is not None, (person.given, day)
        assert distance_km(stay.site.facility, site.facility) <= NEARBY_KM
        assert not person.deployed_on(day)
        checked += 1
    assert checked > 200
    moved = [p for p in people if len({s.site.code for s in p.stays}) > 1]
    assert moved  # PCS moves: the same record has encounters at more than one base
    assert any(
        len(
            {
                e["serviceProvider"]["reference"]
                for e in _by_type(resources, "Encounter")
                if e["subject"]["reference"] == f"Patient/{p.patient_id}"
            }
        )
        > 1
        for p in moved
    )


def test_observations_trend_and_are_flagged(network: NetworkView) -> None:
    generator = Population(PopulationOptions(300, 4, AS_OF, 0.0), network)
    series: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    flags: Counter[str] = Counter()
    for _, resources in generator.records():
        for r in _by_type(resources, "Observation"):
            code = r["code"]["coding"][0]["code"]
            if "valueQuantity" in r:
                quantity = r["valueQuantity"]
                assert quantity["system"] == "http://unitsofmeasure.org" and quantity["code"]
                series[(r["subject"]["reference"], code)].append((r["effectiveDateTime"], quantity["value"]))
            for interpretation in r.get("interpretation", []):
                flags[interpretation["coding"][0]["code"]] += 1
    assert flags["H"] > 0 and flags["N"] > 0
    a1c = [sorted(v) for (_, code), v in series.items() if code == "4548-4" and len(v) >= 3]
    assert a1c and any(max(x for _, x in s) >= 6.5 for s in a1c)  # diabetics exist, and show it
    weights = [sorted(v) for (_, code), v in series.items() if code == "29463-7" and len(v) >= 3]
    assert weights


# -- duplicates ---------------------------------------------------------------------------------------


def test_typos_and_transpositions() -> None:
    rng = rng_for(1, "test")
    for word in ("Rodriguez", "Lee", "Smith"):
        changed = typo(rng, word)
        assert changed != word and abs(len(changed) - len(word)) <= 1
    assert transposed(date(1987, 3, 12), AS_OF) == date(1987, 3, 21)
    assert transposed(date(1990, 4, 11), AS_OF) == date(1990, 11, 4)
    assert transposed(date(1955, 7, 22), AS_OF) is None  # nothing to swap


def test_duplicates_are_planted_with_known_differences(population: Generated) -> None:
    resources, stats, people = population
    patients = {p["id"]: p for p in _by_type(resources, "Patient")}
    same = [p for p in stats.pairs if p.same_person]
    assert len(same) == len(stats.duplicate_of) >= 5
    kinds = Counter(k for p in same for k in p.kind.split("+"))
    assert {"nickname", "transposed-date", "typo", "missing-edipi"} <= set(kinds)
    for duplicate_id, original_id in stats.duplicate_of.items():
        pair = next(p for p in same if {p.a, p.b} == {duplicate_id, original_id})
        duplicate, original = patients[duplicate_id], patients[original_id]
        assert duplicate["gender"] == original["gender"]
        if "missing-edipi" in pair.kind:
            assert _identifier(duplicate, EDIPI) is None and "extension" not in duplicate
        else:
            assert _identifier(duplicate, EDIPI) == _identifier(original, EDIPI)
        if "transposed-date" in pair.kind:
            assert duplicate["birthDate"] != original["birthDate"]
            assert sorted(duplicate["birthDate"].replace("-", "")) == sorted(
                original["birthDate"].replace("-", "")
            )
        else:
            assert duplicate["birthDate"] == original["birthDate"]
        if "nickname" in pair.kind:
            assert duplicate["name"][0]["given"][0] != original["name"][0]["given"][0]
        mrn_systems = {i["system"] for i in original["identifier"] if i["type"]["coding"][0]["code"] == "MR"}
        duplicate_mrns = {
            i["system"] for i in duplicate["identifier"] if i["type"]["coding"][0]["code"] == "MR"
        }
        assert len(duplicate_mrns) == 1 and not duplicate_mrns & mrn_systems  # registered somewhere new
    hard = Counter(p.kind for p in stats.pairs if not p.same_person)
    assert hard["spouse"] > 0
    by_id = {p.patient_id: p for p in people}
    for pair in stats.pairs:
        if pair.kind == "spouse":
            a, b = by_id[pair.a], by_id[pair.b]
            assert a.family_name == b.family_name
            assert a.current_stay.address == b.current_stay.address or a.stays[-1].site is b.stays[-1].site


# -- loaded through the bulk path ------------------------------------------------------------------------


def test_generated_population_loads_and_searches(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    options = PopulationOptions(patients=40, seed=3, as_of=AS_OF, duplicates_rate=0.2)
    summary = generate_population(engine, definitions, settings, options, workers=1)
    assert summary.errors == []
    assert summary.loaded == summary.stats.resources
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        truth = ground_truth(connection)
        assert truth == {frozenset((p.a, p.b)) for p in summary.stats.pairs if p.same_person}
        assert len(truth) == summary.stats.duplicates > 0
        assert look_alikes(connection) == {
            frozenset((p.a, p.b)) for p in summary.stats.pairs if not p.same_person
        }

        def search(kind: str, *params: tuple[str, str]) -> list[Json]:
            page = repo.search(SearchRequest(kind, [*params, ("_count", "500")]))
            return [m.parsed() for m in page.matches]

        patients = search("Patient")
        assert len(patients) == 40 + summary.stats.duplicates
        sponsor = next(p for p in patients if (_sponsor_parts(p) or {}).get("fmp") == "20")
        edipi = _identifier(sponsor, EDIPI)
        found = search("Patient", ("identifier", f"{EDIPI}|{edipi}"))
        duplicates_of_sponsor = {d for d, o in summary.stats.duplicate_of.items() if o == sponsor["id"]}
        assert sponsor["id"] in {p["id"] for p in found}
        assert {p["id"] for p in found} <= {sponsor["id"], *duplicates_of_sponsor}
        weights = search("Observation", ("patient", sponsor["id"]), ("code", "http://loinc.org|29463-7"))
        for weight in weights:
            assert weight["subject"]["reference"] == f"Patient/{sponsor['id']}"
            assert weight["valueQuantity"]["code"] == "kg"
        encounters = search("Encounter", ("patient", sponsor["id"]))
        assert encounters or not weights
        for encounter in encounters:  # the facilities are the network's own resources
            organization = encounter["serviceProvider"]["reference"].split("/")
            assert repo.read(organization[0], organization[1]).parsed()["resourceType"] == "Organization"
            location = encounter["location"][0]["location"]["reference"].split("/")
            assert repo.read(location[0], location[1])
        veterans = search("Patient", ("identifier", f"{VA_ICN}|"))
        assert all(_identifier(v, VA_ICN) for v in veterans)
        booked = search("Appointment", ("status", "booked"), ("date", f"gt{AS_OF.isoformat()}"))
        assert booked
        family = search("Patient", ("family", sponsor["name"][0]["family"]))
        assert sponsor["id"] in {p["id"] for p in family}


def _patient_count(engine: Engine, definitions: Definitions, settings: Settings) -> int:
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        total = repo.search(SearchRequest("Patient", [("_summary", "count")])).total
    assert total is not None
    return total


def test_generate_command_prints_a_summary(
    engine: Engine, definitions: Definitions, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from garrison.cli.main import main
    from garrison.cli.population import ensure_demo_population

    monkeypatch.setenv("GARRISON_DATABASE_URL", settings.resolved_database_url())
    arguments = ["generate", "--patients", "12", "--seed", "2", "--as-of", "2026-11-26", "--workers", "1"]
    result = CliRunner().invoke(main, [*arguments, "--duplicates-rate", "0.5"])
    assert result.exit_code == 0, result.output
    assert "generated 12 patients" in result.output
    match = re.search(r"duplicate registrations planted: (\d+)", result.output)
    assert match is not None
    planted = int(match.group(1))
    assert planted > 0
    assert re.search(rf"Patient\s+{12 + planted}\b", result.output)
    with read_transaction(engine) as connection:
        assert len(ground_truth(connection)) == planted
    assert _patient_count(engine, definitions, settings) == 12 + planted
    # The demo generates its population only into a store without patients.
    ensure_demo_population(settings, engine, patients=5, seed=1)
    assert _patient_count(engine, definitions, settings) == 12 + planted
