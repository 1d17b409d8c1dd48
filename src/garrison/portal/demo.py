"""The portal's demo: each area's `seed_demo` (open slots, conversations, prescriptions with
refills), run by `garrison demo` once the demo accounts exist. Every seed is idempotent."""

from __future__ import annotations

from sqlalchemy import Engine

from garrison.fhir.definitions import Definitions
from garrison.settings import Settings


def seed_portal_demo(engine: Engine, definitions: Definitions, settings: Settings) -> None:
    from garrison.messaging import demo as messaging_demo
    from garrison.portal import record_demo, refills_demo
    from garrison.scheduling import demo as scheduling_demo

    scheduling_demo.seed_demo(engine, definitions, settings)
    messaging_demo.seed_demo(engine, definitions, settings)
    refills_demo.seed_demo(engine, definitions, settings)
    record_demo.seed_demo(engine, definitions, settings)
