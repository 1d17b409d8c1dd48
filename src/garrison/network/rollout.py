"""Garrison's roll-out status per facility, for the deployment dashboards.

A facility moves forward one step at a time: planned → training → go-live → live → sustainment.
The catalogue gives each facility its initial status, wave and go-live date; `seed_rollout` writes
those once (it never overwrites a status someone has since changed), and `set_rollout_status`
moves a facility on. All functions work in the caller's transaction and never commit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, select, update

from garrison.errors import Conflict, Issue, IssueCode, NotFound, Unprocessable
from garrison.fhir.resource import format_instant, utc_now
from garrison.network.catalogue import facility_by_code
from garrison.network.model import ROLLOUT_ORDER, Facility, RolloutStatus
from garrison.network.tables import facility_rollout

# Each status may only be followed by the next one.
NEXT_STATUS: dict[RolloutStatus, RolloutStatus] = dict(itertools.pairwise(ROLLOUT_ORDER))


class InvalidRolloutTransition(Unprocessable):
    """The requested status does not follow the facility's current one."""

    code = IssueCode.INVARIANT


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    facility_code: str
    status: RolloutStatus
    go_live: date
    wave: int
    updated: str  # ISO-8601 UTC
    updated_by: str  # the AccessContext actor that made the last change


def _record(row: Sequence[Any]) -> RolloutRecord:
    return RolloutRecord(
        facility_code=row[0],
        status=RolloutStatus(row[1]),
        go_live=row[2],
        wave=row[3],
        updated=row[4],
        updated_by=row[5],
    )


_COLUMNS = (
    facility_rollout.c.facility_code,
    facility_rollout.c.status,
    facility_rollout.c.go_live_date,
    facility_rollout.c.wave,
    facility_rollout.c.updated,
    facility_rollout.c.updated_by,
)


def seed_rollout(connection: Connection, facilities: Iterable[Facility], *, actor: str) -> int:
    """Insert the catalogue's initial roll-out row for each facility that has none; returns how many."""
    existing = set(connection.execute(select(facility_rollout.c.facility_code)).scalars())
    now = format_instant(utc_now())
    rows = [
        {
            "facility_code": f.code,
            "status": f.rollout.status.value,
            "go_live_date": f.rollout.go_live,
            "wave": f.rollout.wave,
            "updated": now,
            "updated_by": actor,
        }
        for f in facilities
        if f.code not in existing
    ]
    if rows:
        connection.execute(insert(facility_rollout), rows)
    return len(rows)


def rollout_statuses(connection: Connection) -> dict[str, RolloutRecord]:
    """Every facility's roll-out record, by facility code (empty before the network is loaded)."""
    rows = connection.execute(select(*_COLUMNS).order_by(facility_rollout.c.facility_code))
    return {row[0]: _record(row) for row in rows}


def rollout_status(connection: Connection, code: str) -> RolloutRecord:
    """One facility's roll-out record; NotFound if the facility has none (network not loaded)."""
    row = connection.execute(select(*_COLUMNS).where(facility_rollout.c.facility_code == code)).first()
    if row is None:
        raise NotFound(f"Facility {code} has no roll-out record; load the network first")
    return _record(row)


def check_transition(current: RolloutStatus, new: RolloutStatus) -> None:
    """Raise InvalidRolloutTransition unless `new` is the step right after `current`."""
    if NEXT_STATUS.get(current) is not new:
        allowed = NEXT_STATUS.get(current)
        hint = f"the next step is '{allowed.value}'" if allowed else "it is the last step"
        message = f"A facility cannot move from '{current.value}' to '{new.value}': {hint}"
        raise InvalidRolloutTransition(message, [Issue(IssueCode.INVARIANT, message)])


def set_rollout_status(
    connection: Connection,
    code: str,
    status: RolloutStatus,
    *,
    actor: str,
    go_live: date | None = None,
) -> RolloutRecord:
    """Move a facility to the next roll-out status (optionally recording the actual go-live date).

    Raises NotFound for an unknown facility, InvalidRolloutTransition for a skipped or backward
    step, and Conflict when another writer changed the status since it was read.
    """
    try:
        facility_by_code(code)
    except KeyError:
        raise NotFound(f"No facility has the code {code}") from None
    current = rollout_status(connection, code)
    check_transition(current.status, status)
    values: dict[str, object] = {
        "status": status.value,
        "updated": format_instant(utc_now()),
        "updated_by": actor,
    }
    if go_live is not None:
        values["go_live_date"] = go_live
    # Compare-and-set on the status read above, so two concurrent moves cannot both succeed.
    result = connection.execute(
        update(facility_rollout)
        .where(
            facility_rollout.c.facility_code == code,
            facility_rollout.c.status == current.status.value,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise Conflict(f"The roll-out status of {code} was changed concurrently; re-read and retry")
    return rollout_status(connection, code)


def reschedule_go_live(connection: Connection, code: str, go_live: date, *, actor: str) -> RolloutRecord:
    """Move a facility's planned go-live date; only before it has gone live."""
    current = rollout_status(connection, code)
    if current.status not in (RolloutStatus.PLANNED, RolloutStatus.TRAINING):
        message = f"Facility {code} is already '{current.status.value}'; its go-live date is history"
        raise InvalidRolloutTransition(message, [Issue(IssueCode.INVARIANT, message)])
    connection.execute(
        update(facility_rollout)
        .where(facility_rollout.c.facility_code == code)
        .values(go_live_date=go_live, updated=format_instant(utc_now()), updated_by=actor)
    )
    return rollout_status(connection, code)
