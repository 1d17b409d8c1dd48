"""The access policy, loaded from `policy.toml` and expanded against the R4 definitions.

Roles, the interactions each may perform on which resource types, whose records each reaches,
and which security labels each never sees live in that data file; this module only reads it.
Anything the file does not grant is denied.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, cast

from garrison.fhir.definitions import Definitions

Interaction = Literal["read", "search", "create", "update", "delete"]
INTERACTIONS: tuple[Interaction, ...] = ("read", "search", "create", "update", "delete")
PatientReach = Literal["all", "enterprise", "care", "own", "none"]
Label = tuple[str, str]  # (system, code)

CLINICAL_GROUP = "clinical"


@dataclass(frozen=True)
class RolePolicy:
    name: str
    patients: PatientReach
    types: Mapping[Interaction, frozenset[str]]
    withheld_labels: frozenset[Label]
    break_glass: bool  # may start a break-the-glass session
    label_resources: bool  # may set or change meta.security
    operations: frozenset[str]  # "$name" without the dollar; "*" = all

    def allows(self, interaction: Interaction, resource_type: str) -> bool:
        return resource_type in self.types[interaction]

    def allows_operation(self, name: str) -> bool:
        return "*" in self.operations or name in self.operations


@dataclass(frozen=True)
class AccessPolicy:
    roles: Mapping[str, RolePolicy]
    labels: Mapping[str, Label]  # short name -> (system, code)
    clinical_types: frozenset[str]  # types in the Patient compartment

    def role(self, name: str) -> RolePolicy | None:
        return self.roles.get(name)


def _policy_document() -> dict[str, object]:
    text = resources.files("garrison.fhir.authz").joinpath("policy.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _label(value: str) -> Label:
    system, _, code = value.partition("|")
    return system, code


def _expand(
    entries: list[str], groups: Mapping[str, frozenset[str]], every_type: frozenset[str], where: str
) -> frozenset[str]:
    included: set[str] = set()
    excluded: set[str] = set()
    for entry in entries:
        target = excluded if entry.startswith("!") else included
        name = entry.lstrip("!")
        if name == "*":
            target.update(every_type)
        elif name.startswith("@"):
            if name[1:] not in groups:
                raise ValueError(f"{where}: unknown group {name}")
            target.update(groups[name[1:]])
        elif name in every_type:
            target.add(name)
        else:
            raise ValueError(f"{where}: unknown resource type {name}")
    return frozenset(included - excluded)


def policy_from(definitions: Definitions) -> AccessPolicy:
    """Build the policy; a malformed policy file fails loudly at start-up, never at request time."""
    return _policy_for(definitions)


@cache
def _policy_for(definitions: Definitions) -> AccessPolicy:
    document = _policy_document()
    every_type = frozenset(definitions.resource_types)
    clinical = frozenset(t for t, params in definitions.compartments["Patient"].items() if params)
    raw_groups = cast(dict[str, list[str]], document.get("groups", {}))
    groups: dict[str, frozenset[str]] = {CLINICAL_GROUP: clinical}
    for name, members in raw_groups.items():
        groups[name] = _expand(members, groups, every_type, f"group {name}")
    labels = {name: _label(value) for name, value in cast(dict[str, str], document["labels"]).items()}
    roles: dict[str, RolePolicy] = {}
    for name, raw in cast(dict[str, dict[str, object]], document["roles"]).items():
        where = f"role {name}"
        types = {
            interaction: _expand(cast(list[str], raw.get(interaction, [])), groups, every_type, where)
            for interaction in INTERACTIONS
        }
        withheld = cast(list[str], raw.get("withheld_labels", []))
        unknown = [label for label in withheld if label not in labels]
        if unknown:
            raise ValueError(f"{where}: unknown labels {unknown}")
        reach = cast(str, raw["patients"])
        if reach not in ("all", "enterprise", "care", "own", "none"):
            raise ValueError(f"{where}: unknown patient reach {reach!r}")
        roles[name] = RolePolicy(
            name=name,
            patients=cast(PatientReach, reach),
            types=types,
            withheld_labels=frozenset(labels[label] for label in withheld),
            break_glass=bool(raw.get("break_glass", False)),
            label_resources=bool(raw.get("label_resources", False)),
            operations=frozenset(cast(list[str], raw.get("operations", []))),
        )
    return AccessPolicy(roles=roles, labels=labels, clinical_types=clinical)
