"""The official FHIR R4 (4.0.1) definitions, loaded once into compact lookup structures.

Everything that varies by resource type (which types exist, their search parameters, the patient
compartment) is read from HL7's published definitions, not written by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

ABSTRACT_BASES = ("Resource", "DomainResource")


@dataclass(frozen=True, slots=True)
class CompositeComponent:
    definition: str  # canonical URL of the component's own SearchParameter
    expression: str  # FHIRPath relative to the composite's element
    type: str  # the component parameter's type (token, quantity, date, ...)


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter as it applies to one resource type."""

    code: str
    resource_type: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    expression: str | None  # FHIRPath restricted to this resource type; None if not evaluable
    url: str
    targets: tuple[str, ...] = ()
    components: tuple[CompositeComponent, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)  # identity equality and hash: one loaded set per process
class Definitions:
    resource_types: frozenset[str]
    structure_definitions: Mapping[str, dict[str, Any]]  # type name -> StructureDefinition
    search_params: Mapping[str, Mapping[str, SearchParam]]  # resource type -> code -> param
    compartments: Mapping[str, Mapping[str, tuple[str, ...]]]  # compartment -> type -> params
    value_sets: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # canonical url -> ValueSet

    def params_for(self, resource_type: str) -> Mapping[str, SearchParam]:
        return self.search_params.get(resource_type, {})

    def param(self, resource_type: str, code: str) -> SearchParam | None:
        return self.search_params.get(resource_type, {}).get(code)


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level `|` operators."""
    parts: list[str] = []
    depth = 0
    quote = False
    current: list[str] = []
    for char in expression:
        if char == "'":
            quote = not quote
        elif not quote and char in "([":
            depth += 1
        elif not quote and char in ")]":
            depth -= 1
        elif not quote and depth == 0 and char == "|":
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


def _root_type(path: str) -> str:
    return path.lstrip("(").split(".", 1)[0].split(" ", 1)[0]


def expression_for_type(expression: str | None, resource_type: str) -> str | None:
    """Keep only the union branches of a multi-resource expression that apply to `resource_type`."""
    if not expression:
        return None
    branches = [b for b in split_union(expression) if _root_type(b) in (resource_type, *ABSTRACT_BASES)]
    return " | ".join(branches) if branches else None


def _load_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def _fix_published_errata(by_url: dict[str, dict[str, Any]]) -> None:
    """Correct known errors in the published R4 search parameters (fixed in R5).

    DocumentReference-relationship's components have their expressions swapped: the reference
    component `relatesto` says `code` and the token component `relation` says `target`.
    """
    relationship = by_url.get("http://hl7.org/fhir/SearchParameter/DocumentReference-relationship")
    if relationship:
        for component in relationship.get("component", []):
            if component["definition"].endswith("DocumentReference-relatesto"):
                component["expression"] = "target"
            elif component["definition"].endswith("DocumentReference-relation"):
                component["expression"] = "code"


def load_definitions(directory: Path) -> Definitions:
    profiles = _load_json(directory / "profiles-resources.json")
    types_bundle = _load_json(directory / "profiles-types.json")
    structure_definitions: dict[str, dict[str, Any]] = {}
    resource_types: set[str] = set()
    for entry in [*profiles["entry"], *types_bundle["entry"]]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
            continue
        structure_definitions[sd["type"]] = sd
        if sd.get("kind") == "resource" and not sd.get("abstract"):
            resource_types.add(sd["type"])

    by_url: dict[str, dict[str, Any]] = {}
    raw_params = [e["resource"] for e in _load_json(directory / "search-parameters.json")["entry"]]
    for raw in raw_params:
        by_url[raw["url"]] = raw

    _fix_published_errata(by_url)
    search_params: dict[str, dict[str, SearchParam]] = {t: {} for t in resource_types}
    for raw in raw_params:
        bases = raw.get("base", [])
        applies_to = (
            sorted(resource_types)
            if any(b in ABSTRACT_BASES for b in bases)
            else [b for b in bases if b in resource_types]
        )
        components = tuple(
            CompositeComponent(
                definition=c["definition"],
                expression=c["expression"],
                type=by_url.get(c["definition"], {}).get("type", "token"),
            )
            for c in raw.get("component", [])
        )
        for resource_type in applies_to:
            search_params[resource_type][raw["code"]] = SearchParam(
                code=raw["code"],
                resource_type=resource_type,
                type=raw["type"],
                expression=expression_for_type(raw.get("expression"), resource_type),
                url=raw["url"],
                targets=tuple(raw.get("target", [])),
                components=components,
                modifiers=tuple(raw.get("modifier", [])),
                comparators=tuple(raw.get("comparator", [])),
            )

    compartments: dict[str, dict[str, tuple[str, ...]]] = {}
    for path in sorted(directory.glob("CompartmentDefinition-*.json")):
        definition = _load_json(path)
        compartments[definition["code"]] = {
            r["code"]: tuple(r.get("param", [])) for r in definition.get("resource", []) if r.get("param")
        }

    value_sets: dict[str, dict[str, Any]] = {}
    valuesets_path = directory / "valuesets.json"
    if valuesets_path.exists():
        for entry in _load_json(valuesets_path)["entry"]:
            res = entry["resource"]
            if "url" in res:
                value_sets[res["url"]] = res

    return Definitions(
        resource_types=frozenset(resource_types),
        structure_definitions=structure_definitions,
        search_params=search_params,
        compartments=compartments,
        value_sets=value_sets,
    )


@cache
def definitions_from(directory: Path) -> Definitions:
    """Load (once per process) the definitions found in `directory`."""
    return load_definitions(directory)
