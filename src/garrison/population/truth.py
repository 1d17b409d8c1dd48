"""Reading and writing the generator's ground truth (`population_pair`).

The patient index measures itself against these pairs: `ground_truth` gives every pair of
Patient ids that are registrations of one person, `look_alikes` the pairs of different people
planted to be hard to tell apart.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, insert, select

from garrison.population.duplicates import Pair
from garrison.population.tables import population_pair


def store_pairs(connection: Connection, pairs: Iterable[Pair], seed: int) -> int:
    """Replace the pairs of generator run `seed` with `pairs` (in the caller's transaction)."""
    rows = [
        {"patient_a": p.a, "patient_b": p.b, "same_person": p.same_person, "kind": p.kind, "seed": seed}
        for p in pairs
    ]
    connection.execute(delete(population_pair).where(population_pair.c.seed == seed))
    if rows:
        keys = {(r["patient_a"], r["patient_b"]) for r in rows}
        # A pair another run already recorded (same ids) keeps that run's row.
        taken = {
            (a, b)
            for a, b in connection.execute(select(population_pair.c.patient_a, population_pair.c.patient_b))
            if (a, b) in keys
        }
        rows = [r for r in rows if (r["patient_a"], r["patient_b"]) not in taken]
        if rows:
            connection.execute(insert(population_pair), rows)
    return len(rows)


def _pairs(connection: Connection, same_person: bool) -> set[frozenset[str]]:
    query = select(population_pair.c.patient_a, population_pair.c.patient_b).where(
        population_pair.c.same_person == same_person
    )
    return {frozenset((a, b)) for a, b in connection.execute(query)}


def ground_truth(connection: Connection) -> set[frozenset[str]]:
    """Every pair of Patient ids known to be the same person (planted duplicate registrations)."""
    return _pairs(connection, True)


def look_alikes(connection: Connection) -> set[frozenset[str]]:
    """Pairs of different people that look alike: twins, spouses, father and son (Jr.)."""
    return _pairs(connection, False)


def planted_pairs(connection: Connection) -> list[Pair]:
    """Every stored pair with its kind, ordered."""
    query = select(population_pair).order_by(population_pair.c.patient_a, population_pair.c.patient_b)
    return [Pair(r.patient_a, r.patient_b, r.same_person, r.kind) for r in connection.execute(query)]
