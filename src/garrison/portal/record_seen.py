"""The "new" markers of the health record: results this account has not opened yet.

A result is new for an account when it reached the portal (was released) within the last
`NEW_FOR` days and that account has not opened it. Opening a test's page (its trend) marks the
results shown there as seen. Markers are per account, not per patient: a parent opening their
child's result leaves it new for the teenager's own account, and the other way round.

The window keeps a first sign-in honest: ten years of history are not "new", last week's
cholesterol is (MyChart and MHS GENESIS mark recently released results the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from garrison import clock
from garrison.db.engine import is_postgres
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant
from garrison.portal.tables import record_seen

NEW_FOR = timedelta(days=90)
Key = tuple[str, str]


def seen_keys(connection: Connection, account_id: str, keys: Sequence[Key]) -> set[Key]:
    """Which of `keys` (resource type, id) the account has opened (one query per type)."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    t = record_seen.c
    found: set[Key] = set()
    for resource_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            rows = connection.execute(
                select(t.resource_id).where(
                    t.account_id == account_id,
                    t.resource_type == resource_type,
                    t.resource_id.in_(ids[start : start + 500]),
                )
            )
            found.update((resource_type, row[0]) for row in rows)
    return found


def mark_seen(repo: Repository, keys: Iterable[Key]) -> int:
    """Record that the signed-in account opened these results of the record in view; returns how
    many were new to it. Needs a write transaction. Only ids the caller can see count: a key the
    repository does not show this caller is ignored, so the table cannot be used to probe."""
    account, patient = repo.context.account, repo.context.patient
    wanted = sorted(set(keys))
    if account is None or patient is None or not wanted:
        return 0
    already = seen_keys(repo.connection, account, wanted)
    fresh = [k for k in wanted if k not in already]
    visible: list[Key] = []
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in fresh:
        by_type.setdefault(resource_type, []).append(resource_id)
    for resource_type, ids in by_type.items():
        if repo.guard.unrestricted:
            visible.extend((resource_type, i) for i in ids)
        else:
            shown = repo.guard.visible_ids(repo.connection, resource_type, ids)
            visible.extend((resource_type, i) for i in ids if i in shown)
    if not visible:
        return 0
    at = format_instant(clock.now())
    dialect_insert = postgresql.insert if is_postgres(repo.connection) else sqlite.insert
    repo.connection.execute(
        dialect_insert(record_seen).on_conflict_do_nothing(),
        [
            {
                "account_id": account,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "patient_id": patient,
                "seen_at": at,
            }
            for resource_type, resource_id in visible
        ],
    )
    return len(visible)


@dataclass
class NewMarkers:
    """Which results of a page are new for the viewing account (one query for what it opened)."""

    account: str | None
    since: datetime
    seen: set[Key] = field(default_factory=set)

    @classmethod
    def load(cls, repo: Repository, keys: Iterable[Key]) -> NewMarkers:
        account = repo.context.account
        markers = cls(account, clock.now() - NEW_FOR)
        wanted = sorted(set(keys))
        if account is not None and wanted:
            markers.seen = seen_keys(repo.connection, account, wanted)
        return markers

    def is_new(self, key: Key, released_at: datetime | None) -> bool:
        if self.account is None or released_at is None:
            return False
        return released_at >= self.since and key not in self.seen
