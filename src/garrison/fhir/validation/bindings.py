"""Local expansion of the value sets that required bindings point at.

Only what the R4 definitions themselves contain is expanded: ValueSet `compose` rules over
concept lists, whole CodeSystems published with `content = complete`, and simple hierarchy
filters on those. Anything else (SNOMED CT, LOINC, UCUM, BCP-47, ... which the definitions do
not carry) cannot be checked here and is accepted rather than guessed at
(https://hl7.org/fhir/R4/terminologies.html#required asks for the code to be in the value set;
a validator without the terminology cannot decide that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# system -> the codes of that system in the value set, or None when any code of the system
# may be in it (the system could not be enumerated locally).
Expansion = dict[str, frozenset[str] | None]

_HIERARCHY_FILTERS = frozenset({"is-a", "descendent-of", "is-not-a"})


def _strip_version(canonical: str) -> str:
    return canonical.split("|", 1)[0]


class ValueSetExpander:
    """Expands (and caches) value sets by canonical URL from the loaded R4 definitions."""

    def __init__(self, resources: Mapping[str, Mapping[str, Any]]) -> None:
        self._resources = resources
        self._expansions: dict[str, Expansion | None] = {}
        self._code_systems: dict[str, dict[str, tuple[str, ...]] | None] = {}
        self._expanding: set[str] = set()

    def expand(self, canonical: str) -> Expansion | None:
        """The value set's codes per system, or None if it cannot be expanded locally."""
        url = _strip_version(canonical)
        if url in self._expansions:
            return self._expansions[url]
        if url in self._expanding:  # a value set including itself: give up rather than loop
            return None
        self._expanding.add(url)
        try:
            result = self._expand_value_set(url)
        finally:
            self._expanding.discard(url)
        self._expansions[url] = result
        return result

    def codes(self, canonical: str) -> frozenset[str] | None:
        """All codes of the value set regardless of system (for `code` elements), or None."""
        expansion = self.expand(canonical)
        if expansion is None or any(codes is None for codes in expansion.values()):
            return None
        return frozenset().union(*(c for c in expansion.values() if c is not None))

    # -- value sets ------------------------------------------------------------------------

    def _expand_value_set(self, url: str) -> Expansion | None:
        value_set = self._resources.get(url)
        if value_set is None or value_set.get("resourceType") != "ValueSet":
            return None
        compose = value_set.get("compose")
        if compose is None:
            return self._from_expansion(value_set.get("expansion"))
        result: Expansion = {}
        for include in compose.get("include", []):
            part = self._expand_rule(include)
            if part is None:
                return None
            _merge(result, part)
        for exclude in compose.get("exclude", []):
            part = self._expand_rule(exclude)
            if part is None:
                continue  # an exclusion we cannot enumerate only makes us more lenient
            for system, codes in part.items():
                current = result.get(system)
                if current is not None and codes is not None:
                    result[system] = current - codes
        return result

    def _from_expansion(self, expansion: Mapping[str, Any] | None) -> Expansion | None:
        if not expansion or "contains" not in expansion:
            return None
        result: dict[str, set[str]] = {}
        stack = list(expansion["contains"])
        while stack:
            item = stack.pop()
            if "system" in item and "code" in item:
                result.setdefault(item["system"], set()).add(item["code"])
            stack.extend(item.get("contains", []))
        return {system: frozenset(codes) for system, codes in result.items()}

    def _expand_rule(self, rule: Mapping[str, Any]) -> Expansion | None:
        """One compose.include (or exclude): the intersection of its system part and value sets."""
        system = rule.get("system")
        parts: list[Expansion] = []
        if system is not None:
            parts.append({system: self._system_codes(system, rule)})
        for canonical in rule.get("valueSet", []):
            expansion = self.expand(canonical)
            if expansion is None:
                if system is None:
                    return None
                parts.append({system: None})
            else:
                parts.append(expansion)
        if not parts:
            return None
        result = parts[0]
        for other in parts[1:]:
            result = _intersect(result, other)
        return result

    def _system_codes(self, system: str, rule: Mapping[str, Any]) -> frozenset[str] | None:
        if "concept" in rule:
            return frozenset(c["code"] for c in rule["concept"] if "code" in c)
        hierarchy = self._code_system(system)
        if hierarchy is None:
            return None
        codes = set(hierarchy)
        for flt in rule.get("filter", []):
            op, value = flt.get("op"), flt.get("value")
            if flt.get("property") != "concept" or op not in _HIERARCHY_FILTERS or value not in hierarchy:
                return None
            below = _descendants(hierarchy, value)
            if op == "is-a":
                codes &= below | {value}
            elif op == "descendent-of":
                codes &= below
            else:
                codes -= below | {value}
        return frozenset(codes)

    # -- code systems ----------------------------------------------------------------------

    def _code_system(self, system: str) -> dict[str, tuple[str, ...]] | None:
        """code -> child codes, for code systems the definitions publish completely."""
        if system in self._code_systems:
            return self._code_systems[system]
        resource = self._resources.get(system)
        hierarchy: dict[str, tuple[str, ...]] | None = None
        if (
            resource is not None
            and resource.get("resourceType") == "CodeSystem"
            and resource.get("content") == "complete"
        ):
            hierarchy = {}
            _collect(resource.get("concept", []), hierarchy)
        self._code_systems[system] = hierarchy
        return hierarchy


def _collect(concepts: Iterable[Mapping[str, Any]], into: dict[str, tuple[str, ...]]) -> None:
    for concept in concepts:
        children = concept.get("concept", [])
        into[concept["code"]] = tuple(c["code"] for c in children)
        _collect(children, into)


def _descendants(hierarchy: Mapping[str, tuple[str, ...]], code: str) -> set[str]:
    found: set[str] = set()
    stack = list(hierarchy.get(code, ()))
    while stack:
        child = stack.pop()
        if child not in found:
            found.add(child)
            stack.extend(hierarchy.get(child, ()))
    return found


def _merge(into: Expansion, part: Expansion) -> None:
    for system, codes in part.items():
        if system in into:
            current = into[system]
            into[system] = None if current is None or codes is None else current | codes
        else:
            into[system] = codes


def _intersect(left: Expansion, right: Expansion) -> Expansion:
    result: Expansion = {}
    for system in left.keys() & right.keys():
        a, b = left[system], right[system]
        result[system] = b if a is None else a if b is None else a & b
    return result
