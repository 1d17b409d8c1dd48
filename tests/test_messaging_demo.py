"""The demo conversations (`garrison.messaging.demo.seed_demo`) on a small generated population
with the demo sign-ins: the demo patient has an answered question, the demo physician's pool has
the parent's question about their child, and seeding twice adds nothing."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine, func, select

from garrison.db.engine import read_transaction, write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity.accounts import find_account
from garrison.identity.demo import ensure_demo_accounts
from garrison.messaging import inbox, threads
from garrison.messaging.demo import seed_demo
from garrison.messaging.tables import message_thread
from garrison.population.generate import PopulationOptions, generate_population
from garrison.settings import Settings
from tests.identity_fixtures import cheap_password_hashing


def test_seed_demo_shows_messaging_at_work(
    engine: Engine, definitions: Definitions, settings: Settings
) -> None:
    settings = settings.model_copy(update={"data_dir": settings.data_dir / "messaging-demo"})
    options = PopulationOptions(patients=30, seed=7, as_of=date(2025, 6, 1))
    assert not generate_population(engine, definitions, settings, options, workers=1).errors
    with cheap_password_hashing():
        assert ensure_demo_accounts(engine, definitions, settings) is not None
    seed_demo(engine, definitions, settings)
    with read_transaction(engine) as connection:
        patient = find_account(connection, "patient.demo")
        doctor = find_account(connection, "dr.demo")
        assert patient is not None and doctor is not None
        sponsor = patient.fhir_user.removeprefix("Patient/")
        own = Repository(
            connection,
            definitions,
            settings,
            AccessContext(actor=patient.fhir_user, role="patient", patient=sponsor),
        )
        mine = threads.patient_threads(own)
        assert mine and any(t.unread and t.row.last_staff_at for t in mine)  # an answer waits to be read
        staff = Repository(
            connection,
            definitions,
            settings,
            AccessContext(actor=doctor.fhir_user, role="physician", facility=doctor.facility),
        )
        pool = inbox.inbox(staff)
        assert any(t.subject == "Immunization record for school" for t in pool.threads)
        before = connection.execute(select(func.count()).select_from(message_thread)).scalar_one()
    seed_demo(engine, definitions, settings)
    with write_transaction(engine) as connection:
        assert connection.execute(select(func.count()).select_from(message_thread)).scalar_one() == before
