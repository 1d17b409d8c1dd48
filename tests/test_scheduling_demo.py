"""The demo's appointments (`seed_demo`) over a small generated population with the demo
sign-ins, and the `garrison schedules` commands. SQLite only (the generator and booking run on
both databases in test_scheduling.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from garrison import clock
from garrison.cli.schedules import schedules
from garrison.db.engine import make_engine, read_transaction
from garrison.db.migrate import upgrade
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import find_account
from garrison.identity.demo import ensure_demo_accounts
from garrison.network.model import Service
from garrison.population.generate import PopulationOptions, generate_population
from garrison.scheduling.demo import seed_demo
from garrison.scheduling.rules import APPOINTMENT_TYPES
from garrison.scheduling.slots import SlotQuery, find_slots
from garrison.settings import Settings
from tests.identity_fixtures import cheap_password_hashing


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> tuple[Engine, Settings]:
    directory = tmp_path_factory.mktemp("demo")
    engine = make_engine(f"sqlite:///{directory / 'garrison.sqlite3'}")
    upgrade(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False), data_dir=directory / "data"
    )
    options = PopulationOptions(patients=25, seed=11, as_of=clock.now().date(), duplicates_rate=0.0)
    generate_population(engine, definitions, settings, options, workers=1)
    with cheap_password_hashing():
        ensure_demo_accounts(engine, definitions, settings)
    return engine, settings


def _count(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    resource_type: str,
    params: list[tuple[str, str]],
) -> int:
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        page = repo.search(SearchRequest(resource_type, [*params, ("_summary", "count")]))
    assert page.total is not None
    return page.total


def test_seed_demo_opens_time_where_the_demo_family_gets_care(
    demo: tuple[Engine, Settings], definitions: Definitions
) -> None:
    engine, settings = demo
    seed_demo(engine, definitions, settings)
    slots = _count(engine, definitions, settings, "Slot", [("status", "free")])
    assert slots > 500
    with read_transaction(engine) as connection:
        account = find_account(connection, "patient.demo")
        assert account is not None
        patient = account.fhir_user.removeprefix("Patient/")
        context = AccessContext(actor=account.fhir_user, role="patient", patient=patient)
        repo = Repository(connection, definitions, settings, context)
        team = repo.search(
            SearchRequest("CareTeam", [("patient", f"Patient/{patient}"), ("status", "active")])
        )
        organization = team.matches[0].parsed()["managingOrganization"][0]["reference"].split("/")[1]
        primary = find_slots(
            repo, SlotQuery(organization, Service.PRIMARY_CARE, APPOINTMENT_TYPES["primary-care"])
        )
        referral = repo.search(
            SearchRequest("ServiceRequest", [("patient", f"Patient/{patient}"), ("status", "active")])
        )
    assert primary.notice is None and primary.count > 0
    assert len(referral.matches) >= 1
    # The referral opens its specialty clinic to the demo patient.
    performer = referral.matches[0].parsed()
    specialty = Service(performer["performerType"]["coding"][0]["code"])
    clinic_org = performer["performer"][0]["reference"].split("/")[1]
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, context)
        found = find_slots(repo, SlotQuery(clinic_org, specialty, APPOINTMENT_TYPES["specialty-new"]))
    assert found.notice is None and found.count > 0
    # Idempotent: a second run adds nothing.
    seed_demo(engine, definitions, settings)
    assert _count(engine, definitions, settings, "Slot", [("status", "free")]) == slots
    assert (
        _count(
            engine,
            definitions,
            settings,
            "ServiceRequest",
            [("identifier", "http://garrison.health/fhir/sid/demo-referral|" + patient)],
        )
        == 1
    )


def test_the_schedules_commands(
    demo: tuple[Engine, Settings], definitions: Definitions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine, _ = demo
    monkeypatch.setenv("GARRISON_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("GARRISON_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(schedules, ["generate", "--facility", "0125", "--weeks", "1"])
    assert result.exit_code == 0, result.output
    assert "slots:" in result.output and "created" in result.output
    again = runner.invoke(schedules, ["generate", "--facility", "0125", "--weeks", "1"])
    assert again.exit_code == 0 and "slots: 0 created" in again.output
    unknown = runner.invoke(schedules, ["generate", "--facility", "nope"])
    assert unknown.exit_code != 0 and "no facility has the code" in unknown.output
    swept = runner.invoke(schedules, ["sweep"])
    assert swept.exit_code == 0 and "waitlist: 0 entries changed" in swept.output
