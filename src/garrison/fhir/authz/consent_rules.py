"""The patients' Consents, turned into what the guard needs for one caller (checklist P5, P6):
whose records this caller may not see at all (an opt-out of sharing with a partner, say), and
whose 42 CFR Part 2 (ETH) data a Consent explicitly releases to this caller for this purpose.

A revoked or new Consent takes effect at once, in every server process, although a request does
not read every Consent:

- Every write that changes a Consent calls `bump_consent_generation` in its own transaction. It
  sets the one row of `consent_generation` to a fresh random stamp (on PostgreSQL the row lock
  also puts concurrent Consent writers in order).
- A request reads that stamp first (one primary-key lookup) and reads the Consents only when the
  stamp differs from the one this process compiled them under. The Consents read second include
  every Consent write committed before the stamp read (SQLite and PostgreSQL READ COMMITTED or
  snapshot alike), so what is stored under a stamp is never older than the stamp; at worst it is
  newer, and the changed stamp then costs one more reload. A random stamp rather than a counter:
  a transaction that wrote a Consent sees its own new stamp, and if it rolls back, that stamp
  never appears again, so whatever it cached can never be taken for a later state.
- A caller's rules depend on the Consents, the caller's actors and purpose of use, the labels
  asked about, and the instant. They are kept per (actors, purpose, labels) for as long as the
  instant stays between the same two moments at which some Consent's dateTime or period begins
  or ends (`ConsentPolicy.change_instants`).
"""

from __future__ import annotations

import os
import secrets
import threading
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import Connection, and_, false, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from garrison.clock import now
from garrison.db.engine import DriverStatement, Lookup, RoundTripRefused, is_postgres, refusing_round_trips
from garrison.db.schema import CONSENT_GENERATION_ROW, consent_generation, resource, search_reference
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
_STAMP = DriverStatement("SELECT stamp FROM consent_generation WHERE id = :id")  # every request


def stamp_lookup() -> Lookup:
    """The Consent stamp's lookup, to be made ahead with a request's others
    (`garrison.db.engine.prefetched`): every caller but the internal system reads it."""
    return (_STAMP, {"id": CONSENT_GENERATION_ROW})


def bump_consent_generation(connection: Connection) -> None:
    """Mark, in the caller's transaction, that a Consent changed: every process reloads the
    Consents once this commits. An upsert, so an emptied table gets its row back."""
    dialect_insert = postgresql.insert if is_postgres(connection) else sqlite.insert
    stamp = secrets.token_hex(16)
    connection.execute(
        dialect_insert(consent_generation)
        .values(id=CONSENT_GENERATION_ROW, stamp=stamp)
        .on_conflict_do_update(index_elements=[consent_generation.c.id], set_={"stamp": stamp})
    )


# Callers differ by actor (user, facility, client), so results are bounded per database.
_MAX_RESULTS = 512
_MAX_DATABASES = 8  # a server has one; a test process a few
_ResultKey = tuple[frozenset[str], str | None, frozenset[Label]]


def _evaluate(
    policies: Iterable[tuple[str, ConsentPolicy]], question: ConsentQuestion, labels: frozenset[Label]
) -> ConsentRules:
    denied: set[str] = set()
    released: dict[Label, set[str]] = defaultdict(set)
    for patient, policy in policies:
        if policy.blanket_decision(question) == "deny":
            denied.add(patient)
            continue
        if policy.part2_permitted(question):
            released[ETH].add(patient)
        for label, decision in policy.label_decisions(question, labels).items():
            if decision == "permit" and label != ETH:  # ETH only by the Part 2 rule above
                released[label].add(patient)
    if not denied and not released:
        return NO_CONSENTS
    # Read-only: one result is shared by every request of the same kind of caller.
    return ConsentRules(
        frozenset(denied), MappingProxyType({label: frozenset(p) for label, p in released.items()})
    )


class _Compiled:
    """One database's Consents as of one stamp, and the rules evaluated from them so far."""

    def __init__(self, stamp: str | None, rows: Iterable[Any]) -> None:
        by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for content, patient in rows:
            by_patient[patient].append(orjson.loads(content))
        self.stamp = stamp
        self.policies = tuple((patient, ConsentPolicy(consents)) for patient, consents in by_patient.items())
        changes: set[datetime] = set()
        for _, policy in self.policies:
            changes |= policy.change_instants()
        self._changes = sorted(changes)
        self._lock = threading.Lock()
        self._results: OrderedDict[_ResultKey, tuple[int, ConsentRules]] = OrderedDict()

    def rules(self, actors: frozenset[str], purpose: str | None, labels: frozenset[Label]) -> ConsentRules:
        if not self.policies:
            return NO_CONSENTS
        instant = now()
        # Every decision is the same from one change instant up to the next (ConsentPolicy.
        # change_instants), so a result holds for the stretch of time it was computed in, even
        # when the clock is moved back.
        stretch = bisect_right(self._changes, instant)
        key = (actors, purpose, labels)
        with self._lock:
            hit = self._results.get(key)
            if hit is not None and hit[0] == stretch:
                self._results.move_to_end(key)
                return hit[1]
        # Consent actor roles are ParticipationType codes, not Garrison's role names: any role matches.
        question = ConsentQuestion(actors=actors, instant=instant, purpose_of_use=purpose)
        rules = _evaluate(self.policies, question, labels)
        with self._lock:
            self._results[key] = (stretch, rules)
            self._results.move_to_end(key)
            if len(self._results) > _MAX_RESULTS:
                self._results.popitem(last=False)
        return rules


class ConsentCache:
    """The compiled Consents of each database a process reads, checked against the database's
    stamp on every use. A process has one (`consent_rules` uses it); each instance behaves like
    the cache of a separate process."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything (and any lock state: see the fork hook below)."""
        self._lock = threading.Lock()
        # One reload at a time: when the stamp changes, concurrent requests wait for one
        # compilation instead of each doing the same work.
        self._loading = threading.Lock()
        self._databases: OrderedDict[URL, _Compiled] = OrderedDict()

    def rules(
        self, connection: Connection, context: AccessContext, labels: Iterable[Label] = ()
    ) -> ConsentRules:
        """See `consent_rules`."""
        if context.role == "system" and context.client is None:
            return NO_CONSENTS
        compiled = self._compiled(connection)
        return compiled.rules(_actors(context), context.purpose_of_use, frozenset(labels))

    def _cached(self, database: URL, stamp: str) -> _Compiled | None:
        with self._lock:
            cached = self._databases.get(database)
            if cached is None or cached.stamp != stamp:
                return None
            self._databases.move_to_end(database)
            return cached

    def _compiled(self, connection: Connection) -> _Compiled:
        # The stamp first, then the Consents: the order the module docstring relies on.
        found = _STAMP.first(connection, {"id": CONSENT_GENERATION_ROW})
        stamp: str | None = found[0] if found is not None else None
        if stamp is None:
            # The row is gone (an emptied table, until the next Consent write puts it back):
            # there is nothing to key a cache on, so read the Consents as they are.
            return _Compiled(None, connection.execute(_CONSENTS))
        # Keyed by database as well: stamps are unique anyway, but two databases in one process
        # (the test suite's SQLite and PostgreSQL) must not keep evicting each other.
        database = connection.engine.url
        cached = self._cached(database, stamp)
        if cached is not None:
            return cached
        if refusing_round_trips(connection):
            # On the event loop: another thread may hold `_loading` across its round trip.
            raise RoundTripRefused("the Consents of a new stamp")
        with self._loading:
            cached = self._cached(database, stamp)  # another request may have just loaded it
            if cached is not None:
                return cached
            compiled = _Compiled(stamp, connection.execute(_CONSENTS))
        with self._lock:
            self._databases[database] = compiled
            self._databases.move_to_end(database)
            if len(self._databases) > _MAX_DATABASES:
                self._databases.popitem(last=False)
        return compiled


_PROCESS_CACHE = ConsentCache()
# A forked child (the NDJSON loader's workers) must not inherit a lock held by another thread.
os.register_at_fork(after_in_child=_PROCESS_CACHE.clear)


def consent_rules(
    connection: Connection, context: AccessContext, labels: Iterable[Label] = ()
) -> ConsentRules:
    """Evaluate every active Consent for this caller: whose records it denies, and which of
    `labels` (those the caller's role withholds) it releases for which patients. Internal system
    jobs are not subject to Consents (they move records, they do not disclose them)."""
    return _PROCESS_CACHE.rules(connection, context, labels)
