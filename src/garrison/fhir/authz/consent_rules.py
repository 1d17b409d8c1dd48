"""The patients' Consents, turned into what the guard needs for one caller (checklist P5, P6):
whose records this caller may not see at all (an opt-out of sharing with a partner, say), and
whose 42 CFR Part 2 (ETH) data a Consent explicitly releases to this caller for this purpose.

Consents are read fresh for every request, so a revoked or new Consent takes effect at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, and_, false, select

from garrison.clock import now
from garrison.db.schema import resource, search_reference
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.consent import ETH, ConsentPolicy, ConsentQuestion, Label


@dataclass(frozen=True, slots=True)
class ConsentRules:
    denied_patients: frozenset[str]  # every record of these patients is withheld from the caller
    # label -> patients whose Consent releases data with that label to this caller
    released: Mapping[Label, frozenset[str]] = field(default_factory=dict)

    @property
    def restricts(self) -> bool:
        return bool(self.denied_patients)

    @property
    def part2_patients(self) -> frozenset[str]:
        return self.released.get(ETH, frozenset())


NO_CONSENTS = ConsentRules(frozenset())


def _actors(context: AccessContext) -> frozenset[str]:
    actors = {context.actor}
    if context.facility:
        actors.add(f"Organization/{context.facility}")
    if context.client:
        actors.add(f"client/{context.client}")
    return frozenset(actors)


# Built once: the same statement object lets SQLAlchemy reuse its compiled form on every request.
_PATIENT_OF = search_reference.alias("consent_patient")
_CONSENTS = (
    select(resource.c.content, _PATIENT_OF.c.target_id)
    .select_from(resource)
    .join(
        _PATIENT_OF,
        and_(
            _PATIENT_OF.c.resource_type == "Consent",
            _PATIENT_OF.c.resource_id == resource.c.id,
            _PATIENT_OF.c.param == "patient",
            _PATIENT_OF.c.target_type == "Patient",
        ),
    )
    .where(resource.c.resource_type == "Consent", resource.c.deleted == false())
)


def consent_rules(
    connection: Connection, context: AccessContext, labels: Iterable[Label] = ()
) -> ConsentRules:
    """Evaluate every active Consent for this caller: whose records it denies, and which of
    `labels` (those the caller's role withholds) it releases for which patients. Internal system
    jobs are not subject to Consents (they move records, they do not disclose them)."""
    if context.role == "system" and context.client is None:
        return NO_CONSENTS
    rows = connection.execute(_CONSENTS).all()
    if not rows:
        return NO_CONSENTS
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for content, patient in rows:
        by_patient[patient].append(orjson.loads(content))
    question = ConsentQuestion(
        actors=_actors(context),
        instant=now(),
        # Consent actor roles are ParticipationType codes, not Garrison's role names: any role matches.
        purpose_of_use=context.purpose_of_use,
    )
    denied: set[str] = set()
    released: dict[Label, set[str]] = defaultdict(set)
    for patient, consents in by_patient.items():
        policy = ConsentPolicy(consents)
        if policy.blanket_decision(question) == "deny":
            denied.add(patient)
            continue
        if policy.part2_permitted(question):
            released[ETH].add(patient)
        for label, decision in policy.label_decisions(question, labels).items():
            if decision == "permit" and label != ETH:  # ETH only by the Part 2 rule above
                released[label].add(patient)
    return ConsentRules(frozenset(denied), {label: frozenset(p) for label, p in released.items()})
