"""The facility network: the catalogue, its FHIR resources, idempotent loading, roll-out status."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, func, select

from garrison.beneficiaries.vocabulary import (
    DMIS_ID,
    FACILITY_KIND_SYSTEM,
    FACILITY_TIME_ZONE,
    HEALTHCARE_SERVICE_SYSTEM,
    NPI,
    STAFF_ROLE_SYSTEM,
    VA_STATION,
    FacilityKind,
    ServiceBranch,
)
from garrison.cli.main import main
from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource, resource_history
from garrison.errors import Conflict, NotFound, PreconditionFailed
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network import (
    Agency,
    RolloutStatus,
    Service,
    StaffRole,
    catalogue,
    children_of,
    facility_by_code,
    market_of,
    tricare_payer,
)
from garrison.network.load import NetworkSummary, find_network, load_network
from garrison.network.resources import SERVICE_CODES
from garrison.network.rollout import (
    InvalidRolloutTransition,
    reschedule_go_live,
    rollout_status,
    rollout_statuses,
    set_rollout_status,
)
from garrison.network.staff import is_valid_npi, npi_check_digit, staff_for
from garrison.settings import Settings

SERVICE_TYPE = "http://terminology.hl7.org/CodeSystem/service-type"
OVERSEAS_ZONES = {
    "DE": "Europe/Berlin",
    "IT": "Europe/Rome",
    "ES": "Europe/Madrid",
    "GB": "Europe/London",
    "BH": "Asia/Bahrain",
    "JP": "Asia/Tokyo",
    "KR": "Asia/Seoul",
}


# ------------------------------------------------------------------------------ the catalogue


def test_catalogue_is_large_worldwide_and_uniquely_coded() -> None:
    facilities = catalogue()
    clinical = [f for f in facilities if f.kind is not FacilityKind.HEADQUARTERS]
    assert len(clinical) >= 40
    codes = [f.code for f in facilities] + [f.va_station for f in facilities if f.va_station]
    assert len(codes) == len(set(codes))
    assert {f.kind for f in facilities} == set(FacilityKind)
    mtf_kinds = (FacilityKind.MTF_HOSPITAL, FacilityKind.MTF_CLINIC, FacilityKind.MTF_DENTAL)
    mtf_branches = {f.branch for f in facilities if f.kind in mtf_kinds}
    assert {
        ServiceBranch.ARMY,
        ServiceBranch.NAVY,
        ServiceBranch.AIR_FORCE,
        ServiceBranch.SPACE_FORCE,
    } <= mtf_branches
    assert {"DE", "JP", "KR", "IT", "ES", "GB", "BH"} <= {f.country for f in facilities}
    assert "GU" in {f.state for f in facilities if f.country == "US"}
    joint = [f for f in facilities if f.kind is FacilityKind.JOINT]
    assert len(joint) == 1
    assert joint[0].agency is Agency.DOD_VA
    assert joint[0].va_station
    assert "Lovell" in joint[0].name
    names = {f.short_name for f in facilities if f.kind is FacilityKind.HEADQUARTERS}
    assert {"DHA", "DHA Europe", "DHA Indo-Pacific", "San Antonio Market", "SSO"} <= names


def test_every_parent_exists_and_comes_first() -> None:
    seen: set[str] = set()
    roots = []
    for f in catalogue():
        if f.parent_code is None:
            roots.append(f)
        else:
            assert f.parent_code in seen, f"{f.code}'s parent {f.parent_code} is missing or later"
            assert f.parent_code != f.code
        seen.add(f.code)
    # Only the two departments' headquarters and independent civilian providers have no parent.
    assert {f.code for f in roots if f.kind is FacilityKind.HEADQUARTERS} == {"9000", "101"}
    assert all(f.kind in (FacilityKind.HEADQUARTERS, FacilityKind.NETWORK) for f in roots)
    assert tricare_payer().parent_code == "9000"
    # MTFs belong to a DHA market or region; clinics to their VA medical center.
    for f in catalogue():
        if f.agency is Agency.DOD and f.kind is not FacilityKind.HEADQUARTERS:
            market = market_of(f.code)
            assert market is not None
            assert market.parent_code == "9000"
        if f.kind is FacilityKind.VA_CLINIC:
            assert facility_by_code(f.parent_code or "").kind is FacilityKind.VA_MEDICAL_CENTER
    assert {f.code for f in children_of("9001")} == {"0109", "0117", "0118", "0119"}


def test_time_zones_are_valid_and_fit_the_place() -> None:
    for f in catalogue():
        ZoneInfo(f.time_zone)  # raises for an unknown zone
        if f.country in OVERSEAS_ZONES:
            assert f.time_zone == OVERSEAS_ZONES[f.country], f.code
        else:
            assert f.country == "US", f.code
            expected = {"HI": "Pacific/Honolulu", "GU": "Pacific/Guam", "AK": "America/Anchorage"}
            assert f.time_zone == expected.get(f.state or "", f.time_zone), f.code
            assert f.time_zone.startswith(("America/", "Pacific/")), f.code
        assert -90 <= f.latitude <= 90
        assert -180 <= f.longitude <= 180
        # Identifiers follow the agency: DMIS IDs are four digits, VA station numbers three digits
        # and an optional clinic suffix.
        if f.agency in (Agency.DOD, Agency.DOD_VA):
            assert len(f.code) == 4 and f.code.isdigit(), f.code
        elif f.agency is Agency.VA:
            assert f.code[:3].isdigit(), f.code


def test_every_kind_offers_sensible_services_and_staff() -> None:
    for f in catalogue():
        services = set(f.services)
        if f.kind is FacilityKind.HEADQUARTERS:
            assert not services and not f.practitioners
            continue
        assert services and f.practitioners, f.code
        if f.kind in (FacilityKind.MTF_HOSPITAL, FacilityKind.VA_MEDICAL_CENTER, FacilityKind.JOINT):
            assert {Service.PRIMARY_CARE, Service.EMERGENCY, Service.PHARMACY, Service.RADIOLOGY} <= services
        if f.kind is FacilityKind.MTF_DENTAL:
            assert services == {Service.DENTAL}
        if f.kind in (FacilityKind.MTF_CLINIC, FacilityKind.VA_CLINIC):
            assert Service.PRIMARY_CARE in services and Service.EMERGENCY not in services
        if f.kind is FacilityKind.JOINT:
            assert Service.DENTAL in services
        roles = Counter(p.role for p in f.practitioners)
        if Service.PRIMARY_CARE in services:
            assert roles[StaffRole.PHYSICIAN] >= 1 and roles[StaffRole.NURSE] >= 1
        if Service.DENTAL in services:
            assert roles[StaffRole.DENTIST] >= 1
        if Service.PHARMACY in services:
            assert roles[StaffRole.PHARMACIST] == 1
        for person in f.practitioners:
            assert person.facility_code == f.code
            assert person.key.startswith(f"{f.code}-")
            assert person.services and set(person.services) <= services
            assert (person.prefix == "Dr.") == (person.role in (StaffRole.PHYSICIAN, StaffRole.DENTIST))
    assert set(SERVICE_CODES) == set(Service)


def test_staff_have_valid_unique_npis_and_stable_names() -> None:
    assert npi_check_digit("123456789") == "3"  # the CMS worked example: 1234567893
    assert is_valid_npi("1234567893")
    assert not is_valid_npi("1234567890")
    people = [p for f in catalogue() for p in f.practitioners]
    npis = [p.npi for p in people]
    assert len(npis) == len(set(npis))
    assert all(is_valid_npi(n) for n in npis)
    assert len({p.key for p in people}) == len(people)
    assert {p.gender for p in people} == {"female", "male"}
    # Deterministic: the same facility gets the same people in a fresh derivation.
    bamc = facility_by_code("0109")
    again = staff_for("0109", bamc.services, set())
    assert [(p.given, p.family, p.npi, p.role) for p in again] == [
        (p.given, p.family, p.npi, p.role) for p in bamc.practitioners
    ]
    with pytest.raises(KeyError):
        facility_by_code("no-such-code")


# ---------------------------------------------------------------------------------- loading


def _repo(connection: Connection, definitions: Definitions, settings: Settings) -> Repository:
    return Repository(connection, definitions, settings, AccessContext.system("test-network"))


def _load(engine: Engine, definitions: Definitions, settings: Settings) -> NetworkSummary:
    with write_transaction(engine) as connection:
        return load_network(_repo(connection, definitions, settings))


def _search(repo: Repository, resource_type: str, query: str) -> list[dict[str, object]]:
    params = [*parse_qsl(query, keep_blank_values=True), ("_count", "1000")]
    return [s.parsed() for s in repo.search(SearchRequest(resource_type, params)).matches]


def _row_counts(engine: Engine) -> tuple[int, int]:
    with read_transaction(engine) as connection:
        current = connection.execute(select(func.count()).select_from(resource)).scalar_one()
        history = connection.execute(select(func.count()).select_from(resource_history)).scalar_one()
    return current, history


def test_load_creates_the_whole_network(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    facilities = catalogue()
    summary = _load(engine, definitions, settings)
    sites = [f for f in facilities if f.has_site]
    people = [p for f in facilities for p in f.practitioners]
    expected = {
        "Organization": len(facilities) + 1,  # and the TRICARE payer
        "Location": len(sites),
        "HealthcareService": sum(len(f.services) for f in facilities),
        "Practitioner": len(people),
        "PractitionerRole": len(people),
    }
    assert summary.created == expected
    assert summary.updated == {} and summary.unchanged == 0
    assert summary.rollout_seeded == len(facilities)
    assert summary.resource_count == sum(expected.values()) == _row_counts(engine)[0]
    assert set(summary.organizations) == {f.code for f in facilities}
    assert set(summary.locations) == {f.code for f in sites}
    # A fresh database gets the readable deterministic ids.
    assert summary.organizations["0109"] == "mhs-0109"
    assert summary.payer_organization == "mhs-payer-tricare"

    with read_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)
        bamc = repo.read("Organization", summary.organizations["0109"]).parsed()
        assert bamc["name"] == "Brooke Army Medical Center"
        assert {"system": DMIS_ID, "value": "0109", "use": "official"} in bamc["identifier"]
        assert bamc["partOf"]["reference"] == f"Organization/{summary.organizations['9001']}"
        market = repo.read("Organization", summary.organizations["9001"]).parsed()
        assert market["partOf"]["reference"] == f"Organization/{summary.organizations['9000']}"
        assert "partOf" not in repo.read("Organization", summary.organizations["9000"]).parsed()
        assert bamc["type"][0]["coding"][0] == {
            "system": FACILITY_KIND_SYSTEM,
            "code": "mtf-hospital",
            "display": "Military treatment facility: medical center or hospital",
        }
        lovell = repo.read("Organization", summary.organizations["0056"]).parsed()
        assert {(i["system"], i["value"]) for i in lovell["identifier"]} == {
            (DMIS_ID, "0056"),
            (VA_STATION, "556"),
        }

        okinawa = repo.read("Location", summary.locations["0621"]).parsed()
        assert okinawa["extension"] == [{"url": FACILITY_TIME_ZONE, "valueCode": "Asia/Tokyo"}]
        assert okinawa["address"]["country"] == "JP"
        assert okinawa["managingOrganization"]["reference"] == f"Organization/{summary.organizations['0621']}"

        dental = repo.read("HealthcareService", summary.services[("0119", Service.DENTAL)]).parsed()
        assert dental["providedBy"]["reference"] == f"Organization/{summary.organizations['0119']}"
        assert dental["location"][0]["reference"] == f"Location/{summary.locations['0119']}"
        assert {"system": SERVICE_TYPE, "code": "88", "display": "General Dental"} in dental["type"][0][
            "coding"
        ]

        person = facility_by_code("0119").practitioners[0]
        practitioner = repo.read("Practitioner", summary.practitioners[person.key]).parsed()
        assert practitioner["identifier"][0] == {"use": "official", "system": NPI, "value": person.npi}
        assert practitioner["name"][0]["family"] == person.family
        role = repo.read("PractitionerRole", summary.practitioner_roles[person.key]).parsed()
        assert role["practitioner"]["reference"] == f"Practitioner/{summary.practitioners[person.key]}"
        assert role["healthcareService"] == [{"reference": f"HealthcareService/{dental['id']}"}]
        assert role["code"][0]["coding"][0]["code"] == person.role.value

        payer = repo.read("Organization", summary.payer_organization).parsed()
        assert payer["type"][0]["coding"][0]["code"] == "pay"
        assert payer["partOf"]["reference"] == f"Organization/{summary.organizations['9000']}"


def test_loading_twice_writes_nothing_new(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    first = _load(engine, definitions, settings)
    before = _row_counts(engine)
    second = _load(engine, definitions, settings)
    assert second.created == {} and second.updated == {} and second.rollout_seeded == 0
    assert second.unchanged == first.resource_count
    assert not second.changed
    assert _row_counts(engine) == before  # no new resources and no new versions
    assert (second.organizations, second.services, second.practitioner_roles) == (
        first.organizations,
        first.services,
        first.practitioner_roles,
    )
    with read_transaction(engine) as connection:
        found = find_network(_repo(connection, definitions, settings))
    assert found.locations == first.locations and found.practitioners == first.practitioners


def test_concurrent_loads_create_one_network(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: _load(engine, definitions, settings), range(2))
    # One loader waited for the other (advisory lock / SQLite's single writer) and found its work.
    assert sorted([sum(first.created.values()), sum(second.created.values())]) == [0, first.resource_count]
    assert first.organizations == second.organizations and first.services == second.services
    assert _row_counts(engine)[0] == first.resource_count


def test_load_repairs_a_changed_resource_by_identifier(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    summary = _load(engine, definitions, settings)
    org_id = summary.organizations["0052"]
    with write_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)
        repo.patch("Organization", org_id, [{"op": "replace", "path": "/name", "value": "Renamed"}])
        repo.delete("HealthcareService", summary.services[("0052", Service.OPTOMETRY)])
    again = _load(engine, definitions, settings)
    assert again.updated == {"Organization": 1}
    # A deleted service no longer matches its identifier, so it is created again (under its old
    # id: an update of a deleted resource recreates it, https://hl7.org/fhir/R4/http.html#update).
    assert again.created == {"HealthcareService": 1}
    assert again.services == summary.services
    assert again.organizations["0052"] == org_id
    with read_transaction(engine) as connection:
        stored = _repo(connection, definitions, settings).read("Organization", org_id)
    assert stored.parsed()["name"] == "Tripler Army Medical Center"
    assert stored.version_id == 3


def test_load_respects_ids_and_identifiers_already_in_use(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    with write_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)
        # An unrelated Location that happens to hold the id the loader would choose.
        repo.update(
            "Location", "mhs-0109", {"resourceType": "Location", "id": "mhs-0109", "name": "Unrelated"}
        )
        # An Organization someone registered earlier with the same DMIS ID: it is adopted, not duplicated.
        earlier = repo.create(
            {
                "resourceType": "Organization",
                "identifier": [{"system": DMIS_ID, "value": "0117"}],
                "name": "WHASC",
            }
        )
    summary = _load(engine, definitions, settings)
    assert summary.locations["0109"] != "mhs-0109"
    assert summary.organizations["0117"] == earlier.stored.id
    assert summary.updated == {"Organization": 1}
    with read_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)
        assert repo.read("Location", "mhs-0109").parsed()["name"] == "Unrelated"
        assert len(_search(repo, "Organization", f"identifier={DMIS_ID}|0117")) == 1

    with write_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)
        repo.create({"resourceType": "Organization", "identifier": [{"system": DMIS_ID, "value": "0117"}]})
    # Two resources now claim one identifier: like a conditional update, the load refuses.
    with pytest.raises(PreconditionFailed), write_transaction(engine) as connection:
        load_network(_repo(connection, definitions, settings))


def test_network_searches(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    summary = _load(engine, definitions, settings)
    facilities = catalogue()
    code_of = {v: k for k, v in summary.organizations.items()}
    with read_transaction(engine) as connection:
        repo = _repo(connection, definitions, settings)

        europe = _search(repo, "Organization", f"partof=Organization/{summary.organizations['9009']}")
        assert {code_of[o["id"]] for o in europe} == {f.code for f in children_of("9009")}

        japan = _search(repo, "Location", "address-country=JP")
        assert {o["id"] for o in japan} == {
            summary.locations[f.code] for f in facilities if f.country == "JP"
        }
        assert len(japan) >= 5

        dental = _search(repo, "HealthcareService", f"service-type={SERVICE_TYPE}|88")
        own_code = _search(repo, "HealthcareService", f"service-type={HEALTHCARE_SERVICE_SYSTEM}|dental")
        expected = {i for (_, service), i in summary.services.items() if service is Service.DENTAL}
        assert {s["id"] for s in dental} == {s["id"] for s in own_code} == expected
        at_bamc = _search(
            repo, "HealthcareService", f"organization=Organization/{summary.organizations['0109']}"
        )
        assert len(at_bamc) == len(facility_by_code("0109").services)

        roles = _search(
            repo, "PractitionerRole", f"organization=Organization/{summary.organizations['0628']}"
        )
        assert {r["id"] for r in roles} == {
            summary.practitioner_roles[p.key] for p in facility_by_code("0628").practitioners
        }
        physicians = _search(
            repo,
            "PractitionerRole",
            f"role={STAFF_ROLE_SYSTEM}|physician&service=HealthcareService/"
            f"{summary.services[('0628', Service.PRIMARY_CARE)]}",
        )
        guam_doctors = [p for p in facility_by_code("0628").practitioners if p.role is StaffRole.PHYSICIAN]
        assert len(physicians) == len([p for p in guam_doctors if Service.PRIMARY_CARE in p.services]) >= 1

        vamcs = _search(repo, "Organization", f"type={FACILITY_KIND_SYSTEM}|vamc")
        assert len(vamcs) == len([f for f in facilities if f.kind is FacilityKind.VA_MEDICAL_CENTER])
        payer = _search(
            repo, "Organization", "type=http://terminology.hl7.org/CodeSystem/organization-type|pay"
        )
        assert [p["id"] for p in payer] == [summary.payer_organization]


def test_find_network_needs_a_loaded_network(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    with pytest.raises(NotFound), read_transaction(engine) as connection:
        find_network(_repo(connection, definitions, settings))


# ---------------------------------------------------------------------------------- roll-out


def test_rollout_status_moves_forward_one_step_at_a_time(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    _load(engine, definitions, settings)
    planned = next(f for f in catalogue() if f.rollout.status is RolloutStatus.PLANNED)
    with write_transaction(engine) as connection:
        records = rollout_statuses(connection)
        assert {code: r.status for code, r in records.items()} == {
            f.code: f.rollout.status for f in catalogue()
        }
        assert rollout_status(connection, planned.code).go_live == planned.rollout.go_live

        with pytest.raises(InvalidRolloutTransition):
            set_rollout_status(connection, planned.code, RolloutStatus.LIVE, actor="user/test")
        with pytest.raises(InvalidRolloutTransition):
            set_rollout_status(connection, planned.code, RolloutStatus.PLANNED, actor="user/test")
        moved = reschedule_go_live(connection, planned.code, date(2027, 5, 1), actor="user/test")
        assert moved.go_live == date(2027, 5, 1)

        steps = [RolloutStatus.TRAINING, RolloutStatus.GO_LIVE, RolloutStatus.LIVE, RolloutStatus.SUSTAINMENT]
        for step in steps:
            record = set_rollout_status(
                connection,
                planned.code,
                step,
                actor="user/test",
                go_live=date(2027, 5, 3) if step is RolloutStatus.GO_LIVE else None,
            )
            assert record.status is step and record.updated_by == "user/test"
        assert record.go_live == date(2027, 5, 3)
        for backwards in (RolloutStatus.LIVE, RolloutStatus.PLANNED, RolloutStatus.SUSTAINMENT):
            with pytest.raises(InvalidRolloutTransition):
                set_rollout_status(connection, planned.code, backwards, actor="user/test")
        with pytest.raises(InvalidRolloutTransition):
            reschedule_go_live(connection, planned.code, date(2028, 1, 1), actor="user/test")
        with pytest.raises(NotFound):
            set_rollout_status(connection, "0000", RolloutStatus.TRAINING, actor="user/test")

    # Reloading the network keeps the status the deployment team set.
    assert _load(engine, definitions, settings).rollout_seeded == 0
    with read_transaction(engine) as connection:
        assert rollout_status(connection, planned.code).status is RolloutStatus.SUSTAINMENT


def test_rollout_compare_and_set_detects_a_concurrent_change(
    engine: Engine, definitions: Definitions, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garrison.network import rollout

    _load(engine, definitions, settings)
    code = next(f.code for f in catalogue() if f.rollout.status is RolloutStatus.TRAINING)
    with write_transaction(engine) as connection:
        stale = rollout.rollout_status(connection, code)
        set_rollout_status(connection, code, RolloutStatus.GO_LIVE, actor="user/first")
        # The second writer read the status before the first one's change.
        monkeypatch.setattr(rollout, "rollout_status", lambda _c, _code: stale)
        with pytest.raises(Conflict):
            set_rollout_status(connection, code, RolloutStatus.GO_LIVE, actor="user/second")


# ---------------------------------------------------------------------------------- the CLI


def test_cli_load_and_list(engine: Engine, tmp_path: Path) -> None:
    env = {
        "GARRISON_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "GARRISON_DATA_DIR": str(tmp_path),
    }

    def garrison(*args: str, exit_code: int = 0) -> str:
        # In process (the subprocess path is covered by tests/test_cli.py): Settings() reads env.
        result = CliRunner(env=env).invoke(main, ["network", *args], catch_exceptions=False)
        assert result.exit_code == exit_code, result.output
        return result.output

    listed = garrison("list", "--country", "kr")
    assert "(planned)" in listed and "Asia/Seoul" in listed
    assert "Brian D. Allgood Army Community Hospital" in listed and "Landstuhl" not in listed
    loaded = garrison("load")
    assert f"{len(catalogue())} organizations" in loaded and "created" in loaded
    assert "unchanged 0" in loaded
    again = garrison("load")
    assert f"unchanged {_row_counts(engine)[0]}" in again
    listed = garrison("list", "--kind", "mtf-dental")
    lines = [line for line in listed.splitlines()[1:] if line.strip()]
    assert len(lines) == len([f for f in catalogue() if f.kind is FacilityKind.MTF_DENTAL])
    assert "(planned)" not in listed
    planned = next(f for f in catalogue() if f.rollout.status is RolloutStatus.PLANNED)
    assert "next step is 'training'" in garrison("rollout", planned.code, "live", exit_code=1)
    assert f"{planned.code}: training" in garrison("rollout", planned.code, "training")
    assert f"{planned.code}: go-live (go-live 2027-08-01)" in garrison(
        "rollout", planned.code, "go-live", "--go-live", "2027-08-01"
    )
