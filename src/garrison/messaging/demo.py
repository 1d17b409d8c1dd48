"""Demo conversations, so `garrison demo` shows secure messaging at work: the demo patient
(`patient.demo`) asked their primary care team a question and got an answer they have not read
yet, and wrote to a clinic they were seen in; as a parent, they asked their child's care team
something that is still waiting in the pool of the demo physician's (`dr.demo`) facility.

Written through the same services as the portal and the inbox, with the demo people's own
contexts (not audited, like the other demo data jobs), so the records look exactly like real
use: Communications, thread rows, and the notification a reply queues.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, func, select

from garrison.callers import proxy_grants
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity.accounts import find_account
from garrison.messaging import inbox, threads
from garrison.messaging.tables import message_thread
from garrison.settings import Settings

log = logging.getLogger(__name__)
DEMO_PATIENT = "patient.demo"
_JOB = "messaging-demo"


def seed_demo(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    """Add the demo conversations once (nothing happens when the demo patient has any)."""
    with write_transaction(engine) as connection:
        account = find_account(connection, DEMO_PATIENT)
        if account is None or not account.fhir_user.startswith("Patient/"):
            log.info("messaging demo: no %s account, so no demo messages", DEMO_PATIENT)
            return
        sponsor = account.fhir_user.removeprefix("Patient/")
        system = Repository(connection, definitions, settings, AccessContext.system(_JOB))
        children = _children(system, account.id)
        c = message_thread.c
        existing = connection.execute(
            select(func.count()).select_from(message_thread).where(c.patient_id.in_([sponsor, *children]))
        ).scalar_one()
        if existing:
            return

        def repo(context: AccessContext) -> Repository:
            return Repository(connection, definitions, settings, context)

        own = repo(AccessContext(actor=f"Patient/{sponsor}", role="patient", patient=sponsor, audited=False))
        choices = threads.compose_choices(own)
        team = next((choice for choice in choices if choice.kind == "team"), None)
        clinic = next((choice for choice in choices if choice.kind == "clinic"), None)
        if team is not None:
            sent = threads.start_thread(
                own,
                to=team.reference,
                subject="Home blood pressure readings",
                body=(
                    "My home readings have been around 142/91 in the mornings this week.\n"
                    "Should I change anything before my next visit?"
                ),
            )
            staff = _team_clinician(system, team.reference)
            if staff is not None:
                inbox.reply(
                    repo(staff),
                    sent.thread_id,
                    body=(
                        "Thank you for sending these. Keep taking your medicine as prescribed and "
                        "keep a log for two more weeks.\n\nIf you get a headache, chest pain or "
                        "blurred vision, call 911."
                    ),
                )
        if clinic is not None:
            threads.start_thread(
                own,
                to=clinic.reference,
                subject="Copy of my last visit summary",
                body="Could you add the summary of my last visit to my record? I could not find it.",
            )
        for child in children[:1]:
            # The parent writes for their child: the proxy's RelatedPerson is the sender.
            proxy = repo(
                AccessContext(
                    actor=f"Patient/{sponsor}", role="proxy", patient=child, account=account.id, audited=False
                )
            )
            child_team = next((c for c in threads.compose_choices(proxy) if c.kind == "team"), None)
            if child_team is not None:
                threads.start_thread(
                    proxy,
                    to=child_team.reference,
                    subject="Immunization record for school",
                    body="The school asks for an up-to-date immunization record. Is everything current?",
                )


def _children(system: Repository, account_id: str) -> list[str]:
    grants = proxy_grants(system.connection, system.definitions, system.settings, account_id)
    return sorted(g.patient_id for g in grants if g.kind == "guardian")


def _team_clinician(system: Repository, team_reference: str) -> AccessContext | None:
    """The context of the team's first clinician (their PractitionerRole's practitioner, at the
    role's facility), to answer as."""
    team: dict[str, Any] = system.read("CareTeam", team_reference.removeprefix("CareTeam/")).parsed()
    for participant in team.get("participant") or []:
        reference = str((participant.get("member") or {}).get("reference", ""))
        if not reference.startswith("PractitionerRole/"):
            continue
        role = system.read("PractitionerRole", reference.removeprefix("PractitionerRole/")).parsed()
        practitioner = str((role.get("practitioner") or {}).get("reference", ""))
        facility = str((role.get("organization") or {}).get("reference", "")).removeprefix("Organization/")
        if practitioner.startswith("Practitioner/") and facility:
            return AccessContext(actor=practitioner, role="physician", facility=facility, audited=False)
    return None
