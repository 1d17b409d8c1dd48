"""Deterministic randomness and identifiers derived from the generator's seed.

Every random choice comes from a `random.Random` seeded with a string naming what it is for
(`seed/family/12`), so a family's draws do not depend on how many draws earlier families made and
a population of 100 is a prefix of a population of 200. Resource ids are UUIDs derived the same
way (uuid5), never from the clock or the process.
"""

from __future__ import annotations

import random
import uuid
from math import gcd

# A fixed namespace for Garrison's generated ids (a uuid5 of the project's base URL).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "http://garrison.health/population")


def rng_for(*parts: object) -> random.Random:
    """A generator seeded by the parts' text; string seeds hash with SHA-512, stable across runs.

    The population is test data, not a secret: a non-cryptographic generator is what makes it
    reproducible.
    """
    return random.Random("/".join(str(p) for p in parts))  # noqa: S311 (reproducible synthetic data)


class IdFactory:
    """UUIDs named by (seed, owner, kind, counter): stable whatever order owners are visited in."""

    def __init__(self, seed: int, owner: str) -> None:
        self._prefix = f"{seed}/{owner}/"
        self._counts: dict[str, int] = {}

    def next(self, kind: str) -> str:
        count = self._counts.get(kind, 0)
        self._counts[kind] = count + 1
        return str(uuid.uuid5(_NAMESPACE, f"{self._prefix}{kind}/{count}"))

    def named(self, name: str) -> str:
        """An id for a one-off resource of this owner (e.g. "patient")."""
        return str(uuid.uuid5(_NAMESPACE, self._prefix + name))


class UniqueNumbers:
    """Distinct numbers of a fixed width for 0, 1, 2, ...: an affine permutation of the range.

    Used for DoD IDs, VA ICNs and medical record numbers, which must never repeat within a
    population but should look random. `(a * n + b) mod size` is a bijection when a is coprime
    with size.
    """

    def __init__(self, seed: int, purpose: str, low: int, high: int) -> None:
        rng = rng_for(seed, "numbers", purpose)
        self._low = low
        self._size = high - low
        a = rng.randrange(self._size // 3, self._size - 1)
        while gcd(a, self._size) != 1:
            a += 1
        self._a = a
        self._b = rng.randrange(self._size)

    def number(self, n: int) -> int:
        if not 0 <= n < self._size:
            raise ValueError("out of numbers for this purpose")
        return self._low + (self._a * n + self._b) % self._size
