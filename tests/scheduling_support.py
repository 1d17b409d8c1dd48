"""Shared material for the scheduling tests: a loaded network with two weeks of clinic time at
BAMC (0109) and one at Wilford Hall (0117), fixed in time, and patients made to order.

The clinic time starts on a Monday a week or more ahead; `World.at(hours)` moves the process
clock to that Monday plus `hours` (local, America/Chicago), so the tests do not depend on the
day they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from garrison import clock
from garrison.beneficiaries.vocabulary import HEALTHCARE_SERVICE_SYSTEM
from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.network.load import NetworkSummary, load_network
from garrison.network.model import Service
from garrison.scheduling.directory import clear_cache
from garrison.scheduling.generate import GenerationReport, generate_schedules
from garrison.scheduling.rules import REFERRAL_CATEGORY
from garrison.settings import Settings

BAMC = "0109"
WILFORD = "0117"
CHICAGO = ZoneInfo("America/Chicago")


def first_monday() -> date:
    today = clock.now().astimezone(CHICAGO).date()
    return today + timedelta(days=7 + (7 - today.weekday()) % 7)


@dataclass
class World:
    engine: Engine
    definitions: Definitions
    settings: Settings
    network: NetworkSummary
    monday: date
    reports: dict[str, GenerationReport]

    def moment(self, day: int, hour: float) -> datetime:
        """Local (Chicago) time on the `day`-th day after the first Monday."""
        base = datetime.combine(self.monday + timedelta(days=day), time(0), CHICAGO)
        return base + timedelta(hours=hour)

    @contextmanager
    def at(self, day: int = 0, hour: float = 6) -> Iterator[None]:
        with clock.travel(self.moment(day, hour) - clock.now()):
            yield

    @contextmanager
    def when(self, moment: datetime) -> Iterator[None]:
        with clock.travel(moment - clock.now()):
            yield

    @contextmanager
    def system(self, *, write: bool = True) -> Iterator[Repository]:
        transaction = write_transaction if write else read_transaction
        with transaction(self.engine) as connection:
            yield Repository(connection, self.definitions, self.settings, AccessContext.system("tests"))

    @contextmanager
    def as_patient(
        self, patient_id: str, *, write: bool = True, proxy: str | None = None
    ) -> Iterator[Repository]:
        """A repository for the patient's own portal session, or a proxy's (`proxy`: actor)."""
        context = (
            AccessContext(actor=proxy, role="proxy", patient=patient_id)
            if proxy
            else AccessContext(actor=f"Patient/{patient_id}", role="patient", patient=patient_id)
        )
        transaction = write_transaction if write else read_transaction
        with transaction(self.engine) as connection:
            yield Repository(connection, self.definitions, self.settings, context)

    def organization(self, code: str) -> str:
        return self.network.organizations[code]

    def role(self, key: str) -> str:
        return self.network.practitioner_roles[key]

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        with self.system(write=False) as repo:
            return repo.read(resource_type, resource_id).parsed()

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with self.system(write=False) as repo:
            page = repo.search(SearchRequest(resource_type, [*params, ("_count", "1000")]))
            return [m.parsed() for m in page.matches]

    def patient(
        self,
        *,
        birth_date: str = "1988-04-02",
        pcm: str | None = f"{BAMC}-01",
        referral: Service | None = None,
        referral_to: str | None = None,
        referral_end: str | None = None,
        email: str | None = "patient@example.org",
    ) -> str:
        """A patient with (by default) a primary care team at BAMC led by 0109-01."""
        with self.system() as repo:
            telecom: list[dict[str, Any]] = [{"system": "phone", "value": "210-555-0100", "use": "mobile"}]
            if email:
                telecom.insert(0, {"system": "email", "value": email})
            body: dict[str, Any] = {
                "resourceType": "Patient",
                "name": [{"family": "Tester", "given": ["Pat"]}],
                "birthDate": birth_date,
                "telecom": telecom,
            }
            patient_id = repo.create(body).stored.id
            if pcm is not None:
                facility = pcm.split("-")[0]
                repo.create(
                    {
                        "resourceType": "CareTeam",
                        "status": "active",
                        "category": [{"coding": [{"system": "http://loinc.org", "code": "LA28865-6"}]}],
                        "name": "BAMC primary care team",
                        "subject": {"reference": f"Patient/{patient_id}"},
                        "participant": [{"member": {"reference": f"PractitionerRole/{self.role(pcm)}"}}],
                        "managingOrganization": [
                            {"reference": f"Organization/{self.organization(facility)}", "display": "BAMC"}
                        ],
                    }
                )
            if referral is not None:
                add_referral(
                    repo,
                    patient_id,
                    referral,
                    self.organization(referral_to) if referral_to else None,
                    referral_end,
                )
        return patient_id


def add_referral(
    repo: Repository, patient_id: str, service: Service, organization_id: str | None, end: str | None
) -> str:
    system, code, display = REFERRAL_CATEGORY
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": system, "code": code, "display": display}]}],
        "code": {"text": f"Referral to {service.value}"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "performerType": {"coding": [{"system": HEALTHCARE_SERVICE_SYSTEM, "code": service.value}]},
    }
    if organization_id:
        body["performer"] = [{"reference": f"Organization/{organization_id}", "display": "Wilford Hall"}]
    if end:
        body["occurrencePeriod"] = {"start": "2020-01-01", "end": end}
    return repo.create(body).stored.id


def build_world(engine: Engine, definitions: Definitions) -> World:
    clear_cache()  # directory entries of an earlier world on the same database
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False))
    monday = first_monday()
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("tests"))
        network = load_network(repo)
        reports = {
            BAMC: generate_schedules(repo, [BAMC], start=monday, weeks=2, network=network),
            WILFORD: generate_schedules(repo, [WILFORD], start=monday, weeks=1, network=network),
        }
    return World(engine, definitions, settings, network, monday, reports)
