"""Compile the R4 StructureDefinitions into compact per-type element tables.

A `Table` maps each JSON property name an object may carry to an `Element` rule: the JSON
shape (array or single), the kind of value (primitive, complex, resource), the primitive check
or the child table, and the few extras checked in line (required codes, reference targets).
Choice elements (`value[x]`) are expanded into their concrete JSON names (`valueQuantity`, ...),
primitive elements get a second entry for their `_name` extension sibling
(https://hl7.org/fhir/R4/json.html#primitive), and `contentReference` elements share the table
of the element they point at (e.g. Questionnaire.item.item -> Questionnaire.item).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from garrison.errors import IssueCode
from garrison.fhir.definitions import Definitions
from garrison.fhir.validation.bindings import Expansion, ValueSetExpander
from garrison.fhir.validation.primitives import PrimitiveCheck, Problem, primitive_checks

# Element kinds.
PRIMITIVE = 0
COMPLEX = 1
RESOURCE = 2
PRIMITIVE_EXTENSION = 3  # the `_name` sibling carrying a primitive's id/extensions
RESOURCE_TYPE = 4  # the `resourceType` property of a resource

# Extra checks done on a complex value before walking it.
NO_EXTRA = 0
REFERENCE = 1
CODING = 2
CODEABLE_CONCEPT = 3

_SYSTEM_TYPE_PREFIX = "http://hl7.org/fhirpath/System."
_FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_PROFILE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_UNBOUNDED = sys.maxsize


class Element:
    """How one JSON property of an object is checked."""

    __slots__ = (
        "array",
        "base_name",
        "check",
        "choice",
        "choice_name",
        "codes",
        "expansion",
        "extra",
        "kind",
        "max_items",
        "min_items",
        "name",
        "table",
        "targets",
        "type_code",
        "value_set",
    )

    def __init__(self, name: str, kind: int, type_code: str, array: bool) -> None:
        self.name = name
        self.kind = kind
        self.type_code = type_code
        self.array = array
        self.min_items = 0
        self.max_items = _UNBOUNDED
        # Non-optional fields hold placeholders where they do not apply, so the walker reads
        # them without None checks; `kind` says which ones are meaningful.
        self.check: PrimitiveCheck = _not_primitive  # PRIMITIVE
        self.table: Table = _NO_CHILDREN  # COMPLEX, PRIMITIVE_EXTENSION
        self.codes: frozenset[str] | None = None  # required codes of a primitive `code`
        self.expansion: Expansion = {}  # required value set of a Coding/CodeableConcept
        self.targets: frozenset[str] | None = None  # allowed Reference target types (None: any)
        self.value_set = ""  # canonical of the required binding, for messages
        self.extra = NO_EXTRA
        self.choice: str | None = None  # `value` for valueQuantity etc.
        self.choice_name = name  # the JSON name without a leading underscore
        self.base_name = name  # for `_name` entries: `name`


@dataclass(frozen=True, slots=True)
class Requirement:
    """At least one of `names` must be present (min >= 1 in the definition)."""

    label: str  # `status`, `medication[x]`
    names: tuple[str, ...]


class Table:
    """The properties an object of one type (or backbone element) may have."""

    __slots__ = ("choices", "elements", "extension_rule", "path", "required", "value_or_children")

    def __init__(self, path: str) -> None:
        self.path = path
        self.elements: dict[str, Element] = {}
        self.required: tuple[Requirement, ...] = ()
        self.choices: dict[str, tuple[str, ...]] = {}  # `value` -> allowed JSON names
        self.extension_rule = False  # ext-1: an Extension has a value[x] or extensions, not both
        # ele-1 (an element has a value or children other than id) can be judged from the object
        # alone; not for resources, nor for a primitive's `_name` object whose value is beside it.
        self.value_or_children = True


_NO_CHILDREN = Table("")


def _not_primitive(value: Any) -> Problem | None:
    return (IssueCode.STRUCTURE, "not a primitive element")


@dataclass(frozen=True, slots=True)
class CompiledDefinitions:
    resources: Mapping[str, Table]  # concrete resource type -> table
    datatypes: Mapping[str, Table]  # complex datatype -> table


def _type_code(type_ref: Mapping[str, Any], element: Mapping[str, Any]) -> str:
    code = str(type_ref["code"])
    if not code.startswith(_SYSTEM_TYPE_PREFIX):
        return code
    # Resource.id is an `id` (https://hl7.org/fhir/R4/resource.html#id) although the R4 snapshot
    # records it as a plain System.String like Element.id.
    if element.get("base", {}).get("path") == "Resource.id":
        return "id"
    for ext in type_ref.get("extension", []):
        if ext.get("url") == _FHIR_TYPE_EXTENSION:
            return str(ext["valueUrl"])
    return "string"


def _targets(type_ref: Mapping[str, Any]) -> frozenset[str] | None:
    names = {p.rsplit("/", 1)[-1] for p in type_ref.get("targetProfile", []) if p.startswith(_PROFILE_PREFIX)}
    if not names or "Resource" in names or "DomainResource" in names:
        return None
    return frozenset(names)


class _Compiler:
    def __init__(self, definitions: Definitions) -> None:
        self.sds = definitions.structure_definitions
        self.checks = primitive_checks(self.sds)
        self.expander = ValueSetExpander(definitions.value_sets)
        self.datatypes: dict[str, Table] = {
            name: Table(name) for name, sd in self.sds.items() if sd.get("kind") == "complex-type"
        }
        self.resource_types = definitions.resource_types
        # The `_name` object of a primitive: Element's id and extension.
        self.primitive_extension = Table("Element")
        self.primitive_extension.value_or_children = False

    def compile(self) -> CompiledDefinitions:
        for name, table in self.datatypes.items():
            self._fill(self.sds[name], table)
        self._fill(self.sds["Element"], self.primitive_extension)
        self.datatypes["Extension"].extension_rule = True
        resources: dict[str, Table] = {}
        for name in sorted(self.resource_types):
            table = Table(name)
            table.value_or_children = False
            self._fill(self.sds[name], table)
            table.elements["resourceType"] = Element("resourceType", RESOURCE_TYPE, "string", False)
            resources[name] = table
        return CompiledDefinitions(resources=resources, datatypes=self.datatypes)

    def _fill(self, sd: Mapping[str, Any], root: Table) -> None:
        snapshot = [e for e in sd["snapshot"]["element"] if "sliceName" not in e]
        children: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for element in snapshot[1:]:
            children[element["path"].rsplit(".", 1)[0]].append(element)
        tables = {snapshot[0]["path"]: root}
        pending: list[tuple[Element, str]] = []

        def build(path: str, table: Table) -> None:
            required: list[Requirement] = []
            for element in children.get(path, []):
                for rule, requirement in self._rules(element, children, tables, pending, build):
                    table.elements[rule.name] = rule
                    if rule.choice is not None and rule.kind != PRIMITIVE_EXTENSION:
                        table.choices[rule.choice] = (*table.choices.get(rule.choice, ()), rule.name)
                    if requirement is not None and requirement not in required:
                        required.append(requirement)
            table.required = tuple(required)

        build(snapshot[0]["path"], root)
        for rule, target in pending:
            rule.table = tables[target]

    def _rules(
        self,
        element: Mapping[str, Any],
        children: Mapping[str, list[Mapping[str, Any]]],
        tables: dict[str, Table],
        pending: list[tuple[Element, str]],
        build: Callable[[str, Table], None],
    ) -> list[tuple[Element, Requirement | None]]:
        path: str = element["path"]
        name = path.rsplit(".", 1)[1]
        maximum: str = element["max"]
        if maximum == "0":
            return []  # prohibited: leaving it out of the table rejects it as unknown
        array = maximum != "1"
        max_items = _UNBOUNDED if maximum == "*" else int(maximum)
        minimum = int(element.get("min", 0))
        binding = element.get("binding")
        value_set = binding.get("valueSet") if binding and binding.get("strength") == "required" else None

        if "contentReference" in element:
            # https://hl7.org/fhir/R4/elementdefinition-definitions.html#ElementDefinition.contentReference
            rule = Element(name, COMPLEX, "BackboneElement", array)
            pending.append((rule, element["contentReference"].split("#", 1)[1]))
            rule.min_items, rule.max_items = minimum, max_items
            return [(rule, Requirement(name, (name,)) if minimum else None)]

        if path in children:  # an inline BackboneElement (or Element) with its own children
            table = Table(path)
            tables[path] = table
            build(path, table)
            rule = Element(name, COMPLEX, "BackboneElement", array)
            rule.table = table
            rule.min_items, rule.max_items = minimum, max_items
            return [(rule, Requirement(name, (name,)) if minimum else None)]

        is_choice = name.endswith("[x]")
        base = name[:-3] if is_choice else name
        rules: list[Element] = []
        for type_ref in element.get("type", []):
            code = _type_code(type_ref, element)
            json_name = base + code[0].upper() + code[1:] if is_choice else base
            rule = self._rule(json_name, code, array, type_ref, value_set)
            rule.min_items, rule.max_items = minimum, max_items
            if is_choice:
                rule.choice = base
                rule.choice_name = json_name
            rules.append(rule)
            if rule.kind == PRIMITIVE:
                sibling = Element("_" + json_name, PRIMITIVE_EXTENSION, code, array)
                sibling.table = self.primitive_extension
                sibling.base_name = json_name
                sibling.choice = rule.choice
                sibling.choice_name = rule.choice_name
                rules.append(sibling)
            if not is_choice:
                break  # R4 base definitions only list several types on choice elements
        requirement = None
        if minimum:
            label = base + "[x]" if is_choice else base
            requirement = Requirement(label, tuple(r.name for r in rules))
        return [(r, requirement) for r in rules]

    def _rule(
        self, json_name: str, code: str, array: bool, type_ref: Mapping[str, Any], value_set: str | None
    ) -> Element:
        check = self.checks.get(code)
        if check is not None:
            rule = Element(json_name, PRIMITIVE, code, array)
            rule.check = check
            if value_set is not None:
                rule.codes = self.expander.codes(value_set)
                rule.value_set = value_set
            return rule
        if code == "Resource" or code in self.resource_types:
            return Element(json_name, RESOURCE, code, array)
        table = self.datatypes.get(code)
        if table is None:
            raise ValueError(f"{json_name}: type {code} has no StructureDefinition")
        rule = Element(json_name, COMPLEX, code, array)
        rule.table = table
        if code == "Reference":
            rule.targets = _targets(type_ref)
            rule.extra = REFERENCE
        elif code in ("Coding", "CodeableConcept") and value_set is not None:
            expansion = self.expander.expand(value_set)
            if expansion is not None:
                rule.expansion = expansion
                rule.value_set = value_set
                rule.extra = CODING if code == "Coding" else CODEABLE_CONCEPT
        return rule


def compile_definitions(definitions: Definitions) -> CompiledDefinitions:
    """Build the element tables for every concrete resource type and complex datatype."""
    return _Compiler(definitions).compile()
