"""Helpers for portal tests: a small synthetic population in the test database, portal accounts
linked to its people (a patient, a parent acting for a child), and the whole app served over HTTP.

    populate(engine, definitions, settings)            # once per database (idempotent)
    family = families(engine, definitions, settings)[0]  # a guardian link: parent, child
    account = patient_account(engine, family.parent_id)  # a portal sign-in for the parent
    grant_guardian(engine, definitions, settings, family, account.id)
    with portal_site(settings) as site: Browser(site.base).sign_in(account.username) ...
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine, func, select

from garrison import clock
from garrison.beneficiaries.vocabulary import EDIPI, PROXY_ACCOUNT
from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import accounts
from garrison.identity.model import Account
from garrison.population.generate import PopulationOptions, generate_population
from garrison.settings import Settings
from tests.identity_fixtures import PASSWORD, Served

POPULATION = 40
SEED = 3


def populate(
    engine: Engine, definitions: Definitions, settings: Settings, patients: int = POPULATION
) -> None:
    """Generate a small population unless the store already holds patients."""
    with read_transaction(engine) as connection:
        count = connection.execute(
            select(func.count()).select_from(resource).where(resource.c.resource_type == "Patient")
        ).scalar_one()
    if count:
        return
    options = PopulationOptions(patients=patients, seed=SEED, as_of=clock.now().date(), duplicates_rate=0.0)
    generate_population(engine, definitions, settings, options, workers=1)


@dataclass(frozen=True)
class Family:
    """A guardianship in the population: `related` (RelatedPerson GUARD) links parent and child."""

    related: dict[str, Any]
    parent_id: str  # the sponsor's Patient id
    child_id: str
    child_birth_date: str

    @property
    def child_age(self) -> int:
        born = date.fromisoformat(self.child_birth_date[:10])
        today = clock.now().date()
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def system_repo(connection: Any, definitions: Definitions, settings: Settings) -> Repository:
    return Repository(connection, definitions, settings, AccessContext.system("tests"))


def families(engine: Engine, definitions: Definitions, settings: Settings) -> list[Family]:
    """Guardianships whose parent is a patient in the store, youngest child first."""
    found: list[Family] = []
    with read_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        links = repo.search(
            SearchRequest(
                "RelatedPerson",
                [("relationship", "GUARD"), ("_include", "RelatedPerson:patient"), ("_count", "200")],
            )
        )
        children = {s.id: s.parsed() for s in links.included if s.resource_type == "Patient"}
        for stored in links.matches:
            related = stored.parsed()
            child_id = str(related["patient"]["reference"]).removeprefix("Patient/")
            edipi = next(
                (i["value"] for i in related.get("identifier", []) if i.get("system") == EDIPI), None
            )
            child = children.get(child_id)
            if edipi is None or child is None or not child.get("birthDate"):
                continue
            parents = repo.search(SearchRequest("Patient", [("identifier", f"{EDIPI}|{edipi}")]))
            if not parents.matches:
                continue
            found.append(Family(related, parents.matches[0].id, child_id, child["birthDate"]))
    return sorted(found, key=lambda f: f.child_birth_date, reverse=True)


def patient_account(engine: Engine, patient_id: str, username: str | None = None) -> Account:
    """A portal account for a patient in the store (password PASSWORD, no TOTP)."""
    with write_transaction(engine) as connection:
        return accounts.create_account(
            connection,
            username=username or f"pat-{secrets.token_hex(4)}",
            kind="patient",
            role="patient",
            display_name="Portal Patient",
            fhir_user=f"Patient/{patient_id}",
            password=PASSWORD,
            actor="system/tests",
            actor_role="system",
        )


def grant_guardian(
    engine: Engine, definitions: Definitions, settings: Settings, family: Family, account_id: str
) -> None:
    """Let the account act for the family's child (the guardianship names the account)."""
    with write_transaction(engine) as connection:
        repo = system_repo(connection, definitions, settings)
        related = repo.read("RelatedPerson", str(family.related["id"])).parsed()
        kept = [i for i in related.get("identifier", []) if i.get("system") != PROXY_ACCOUNT]
        related["identifier"] = [*kept, {"system": PROXY_ACCOUNT, "value": account_id}]
        repo.update("RelatedPerson", related["id"], related)


@contextmanager
def portal_site(settings: Settings) -> Iterator[Served]:
    """The whole application (`create_app`) on 127.0.0.1, lifespan on."""
    from garrison.web.app import create_app

    served = Served(create_app(settings))
    served.start()
    try:
        yield served
    finally:
        served.stop()
