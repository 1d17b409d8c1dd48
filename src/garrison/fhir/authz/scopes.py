"""SMART on FHIR scopes (App Launch 1.0 and 2.x), parsed into what the repository checks.

https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html:
`patient/Observation.rs`, `user/*.cruds`, granular `patient/Observation.rs?category=laboratory`,
and the v1 forms `patient/Observation.read`, `user/*.write`, `system/*.*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from garrison.fhir.authz.policy import Interaction

ScopeLevel = Literal["patient", "user", "system"]

_LETTER_INTERACTION: dict[str, Interaction] = {
    "c": "create",
    "r": "read",
    "u": "update",
    "d": "delete",
    "s": "search",
}
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True)
class ScopeGrant:
    level: ScopeLevel
    resource_type: str  # a type or "*"
    interactions: frozenset[Interaction]
    filters: tuple[tuple[str, str], ...]  # granular scope: search parameters the data must match

    def covers(self, interaction: Interaction, resource_type: str) -> bool:
        return interaction in self.interactions and self.resource_type in ("*", resource_type)


def parse_scope(scope: str) -> ScopeGrant | None:
    """One clinical-data scope, or None for anything else (openid, launch/patient, offline_access)."""
    level, slash, rest = scope.partition("/")
    if not slash or level not in ("patient", "user", "system"):
        return None
    rest, _, query = rest.partition("?")
    resource_type, dot, letters = rest.partition(".")
    if not dot or not resource_type:
        return None
    letters = _V1_LETTERS.get(letters, letters)
    if not letters or any(ch not in _LETTER_INTERACTION for ch in letters):
        return None
    # v2 requires the letters in the order c, r, u, d, s.
    if "".join(sorted(letters, key="cruds".index)) != letters:
        return None
    return ScopeGrant(
        level=level,  # type: ignore[arg-type]  # checked just above
        resource_type=resource_type,
        interactions=frozenset(_LETTER_INTERACTION[ch] for ch in letters),
        filters=tuple(parse_qsl(query, keep_blank_values=False)) if query else (),
    )


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The clinical-data scopes of one token. A first-party session has no ScopeSet at all."""

    grants: tuple[ScopeGrant, ...]

    @classmethod
    def parse(cls, scope_string: str) -> ScopeSet:
        grants = [parse_scope(s) for s in scope_string.split()]
        return cls(tuple(g for g in grants if g is not None))

    @property
    def complete(self) -> bool:
        """Every interaction on every type, unfiltered, beyond one patient's record
        (`system/*.cruds`, `user/*.cruds`): narrows nothing. `patient/*.cruds` is not complete:
        it reaches only the patient in context."""
        return any(
            g.level != "patient"
            and g.resource_type == "*"
            and len(g.interactions) == len(_LETTER_INTERACTION)
            and not g.filters
            for g in self.grants
        )

    @property
    def patient_only(self) -> bool:
        """Every grant is patient-level (`patient/...`): the token reaches only the patient in
        context, whatever its user's role reaches."""
        return bool(self.grants) and all(g.level == "patient" for g in self.grants)

    def permits(self, interaction: Interaction, resource_type: str) -> bool:
        return any(g.covers(interaction, resource_type) for g in self.grants)

    def filters(
        self, interaction: Interaction, resource_type: str
    ) -> list[tuple[tuple[str, str], ...]] | None:
        """Granular restrictions: None when some grant covers the type without filters;
        otherwise the alternatives (any one of them suffices)."""
        alternatives: list[tuple[tuple[str, str], ...]] = []
        for grant in self.grants:
            if not grant.covers(interaction, resource_type):
                continue
            if not grant.filters:
                return None
            alternatives.append(grant.filters)
        return alternatives

    def narrowed_to(self, limit: ScopeSet) -> ScopeSet:
        """What both allow: each grant of this set cut down to the types and interactions an
        unfiltered grant of `limit` covers (a proxy whose access is limited using an app)."""
        narrowed: list[ScopeGrant] = []
        for grant in self.grants:
            for bound in limit.grants:
                if bound.filters:
                    continue
                if grant.resource_type != "*" and bound.resource_type not in ("*", grant.resource_type):
                    continue
                interactions = grant.interactions & bound.interactions
                if interactions:
                    resource_type = bound.resource_type if grant.resource_type == "*" else grant.resource_type
                    narrowed.append(ScopeGrant(grant.level, resource_type, interactions, grant.filters))
        return ScopeSet(tuple(narrowed))
