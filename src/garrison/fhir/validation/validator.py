"""Validate FHIR R4 JSON resources against the compiled StructureDefinitions.

One pass over the JSON: each object is checked against its element table (unknown properties,
JSON shapes, cardinality, primitive formats, required bindings, reference targets), following the
JSON representation rules of https://hl7.org/fhir/R4/json.html. FHIRPath invariants are not
evaluated, except for a few that are cheap and structural (ele-1 for empty elements, ext-1,
dom-2). Expressions in the issues are FHIRPath-style locations such as `Patient.name[0].given[1]`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from garrison.errors import Issue, IssueCode
from garrison.fhir.definitions import Definitions
from garrison.fhir.validation.structure import (
    CODEABLE_CONCEPT,
    CODING,
    COMPLEX,
    PRIMITIVE,
    PRIMITIVE_EXTENSION,
    REFERENCE,
    RESOURCE,
    Element,
    Table,
    compile_definitions,
)

STRUCTURE, REQUIRED, VALUE = IssueCode.STRUCTURE, IssueCode.REQUIRED, IssueCode.VALUE

# A relative literal reference `Type/id` (or a conditional `Type?query` in a transaction):
# https://hl7.org/fhir/R4/references.html#literal. Absolute URLs have a scheme (`http:`,
# `urn:`) before any slash and do not match; `#id` points at a contained resource.
# ele-1: https://hl7.org/fhir/R4/element.html#invs
_ELE_1 = "An element must have a value or children other than its id"

_RELATIVE_REFERENCE = re.compile(r"([A-Za-z]+)[/?]")


class Validator:
    """Validates resources against the R4 definitions it was built from (compiled once)."""

    def __init__(self, definitions: Definitions) -> None:
        compiled = compile_definitions(definitions)
        self._resources = compiled.resources
        self._resource_types = definitions.resource_types

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        """All problems found in `resource`; an empty list means it is valid."""
        out: list[Issue] = []
        if type(resource) is not dict:
            out.append(Issue(STRUCTURE, "A resource must be a JSON object"))
            return out
        try:
            self._resource(resource, None, False, out)
        except RecursionError:
            out.append(Issue(STRUCTURE, "The resource is nested too deeply to validate"))
        return out

    # -- walking -----------------------------------------------------------------------------

    def _resource(self, obj: dict[str, Any], path: str | None, contained: bool, out: list[Issue]) -> None:
        resource_type = obj.get("resourceType")
        table = self._resources.get(resource_type) if type(resource_type) is str else None
        if table is None:
            where = "resourceType" if path is None else f"{path}.resourceType"
            if resource_type is None:
                out.append(Issue(REQUIRED, "The resource has no resourceType", where))
            else:
                out.append(Issue(STRUCTURE, f"Unknown resource type {resource_type!r}", where))
            return
        base: str = table.path if path is None else path
        if contained and "contained" in obj:
            # dom-2: https://hl7.org/fhir/R4/domainresource.html#invs
            message = "A contained resource cannot itself contain resources"
            out.append(Issue(STRUCTURE, message, f"{base}.contained"))
        self._object(obj, table, base, out)

    def _object(self, obj: dict[str, Any], table: Table, path: str, out: list[Issue]) -> None:
        if not obj:
            out.append(Issue(STRUCTURE, "Empty objects are not allowed in FHIR JSON", path))
            return
        elements = table.elements
        choices: dict[str, str] | None = None
        for key, value in obj.items():
            elem = elements.get(key)
            if elem is None:
                out.append(self._unknown(table, key, path))
                continue
            if elem.choice is not None:
                if choices is None:
                    choices = {elem.choice: elem.choice_name}
                else:
                    seen = choices.setdefault(elem.choice, elem.choice_name)
                    if seen != elem.choice_name:
                        out.append(
                            Issue(
                                STRUCTURE,
                                f"Only one of {elem.choice}[x] may be present ({seen} and {key} found)",
                                f"{path}.{key}",
                            )
                        )
            kind = elem.kind
            if kind == PRIMITIVE:
                if elem.array:
                    if self._bad_array(elem, value, path, out):
                        continue
                    check, codes = elem.check, elem.codes
                    for i, item in enumerate(value):
                        if item is None:
                            self._null_item(obj, key, i, path, out)
                            continue
                        problem = check(item)
                        if problem is not None:
                            out.append(Issue(problem[0], problem[1], f"{path}.{key}[{i}]"))
                        elif codes is not None and item not in codes:
                            out.append(self._not_in_value_set(item, elem, f"{path}.{key}[{i}]"))
                else:
                    problem = elem.check(value)
                    if problem is not None:
                        if type(value) is list:
                            message = f"{key} must be a single value, not an array (max cardinality 1)"
                            out.append(Issue(STRUCTURE, message, f"{path}.{key}"))
                        else:
                            out.append(Issue(problem[0], problem[1], f"{path}.{key}"))
                    elif elem.codes is not None and value not in elem.codes:
                        out.append(self._not_in_value_set(value, elem, f"{path}.{key}"))
            elif kind == COMPLEX:
                child_table = elem.table
                if elem.array:
                    if self._bad_array(elem, value, path, out):
                        continue
                    for i, item in enumerate(value):
                        where = f"{path}.{key}[{i}]"
                        if type(item) is dict:
                            if elem.extra:
                                self._extra(elem, item, where, out)
                            self._object(item, child_table, where, out)
                        else:
                            out.append(self._not_object(elem, item, where))
                elif type(value) is dict:
                    where = f"{path}.{key}"
                    if elem.extra:
                        self._extra(elem, value, where, out)
                    self._object(value, child_table, where, out)
                else:
                    out.append(self._not_object(elem, value, f"{path}.{key}"))
            elif kind == RESOURCE:
                if elem.array:
                    if self._bad_array(elem, value, path, out):
                        continue
                    for i, item in enumerate(value):
                        if type(item) is dict:
                            self._resource(item, f"{path}.{key}[{i}]", key == "contained", out)
                        else:
                            out.append(self._not_object(elem, item, f"{path}.{key}[{i}]"))
                elif type(value) is dict:
                    self._resource(value, f"{path}.{key}", False, out)
                else:
                    out.append(self._not_object(elem, value, f"{path}.{key}"))
            elif kind == PRIMITIVE_EXTENSION:
                self._primitive_extension(obj, elem, value, path, out)
        for requirement in table.required:
            for name in requirement.names:
                if name in obj:
                    break
            else:
                label = requirement.label
                out.append(Issue(REQUIRED, f"Missing required element {label}", f"{path}.{label}"))
        if table.extension_rule:
            # ext-1: https://hl7.org/fhir/R4/extensibility.html#ext-1
            has_value = choices is not None and "value" in choices
            if has_value == ("extension" in obj):
                message = "An extension must have either a value[x] or nested extensions, not both"
                out.append(Issue(STRUCTURE, message, path))
        elif table.value_or_children and len(obj) == 1 and "id" in obj:
            # ele-1: every element has a value or children other than its id.
            out.append(Issue(STRUCTURE, _ELE_1, path))

    def _primitive_extension(
        self, obj: dict[str, Any], elem: Element, value: Any, path: str, out: list[Issue]
    ) -> None:
        """The `_name` sibling holding a primitive's id and extensions (json.html#primitive)."""
        table = elem.table
        name = elem.base_name
        if not elem.array:
            if type(value) is dict:
                self._object(value, table, f"{path}.{name}", out)
                if obj.get(name) is None and len(value) == 1 and "id" in value:
                    out.append(Issue(STRUCTURE, _ELE_1, f"{path}.{name}"))
            else:
                out.append(Issue(STRUCTURE, f"_{name} must be an object", f"{path}.{name}"))
            return
        if self._bad_array(elem, value, path, out):
            return
        values = obj.get(name)
        if type(values) is not list:
            values = None  # absent (or mistyped, which the walk of `name` reports)
        elif len(values) != len(value):
            message = f"_{name} must have as many entries as {name} ({len(value)} vs {len(values)})"
            out.append(Issue(STRUCTURE, message, f"{path}.{name}"))
            return
        for i, item in enumerate(value):
            if type(item) is dict:
                self._object(item, table, f"{path}.{name}[{i}]", out)
                if len(item) == 1 and "id" in item and (values is None or values[i] is None):
                    out.append(Issue(STRUCTURE, _ELE_1, f"{path}.{name}[{i}]"))
            elif item is not None:
                message = f"_{name} entries must be objects or null"
                out.append(Issue(STRUCTURE, message, f"{path}.{name}[{i}]"))
            elif values is None:
                message = f"A null in _{name} needs a value at the same position in {name}"
                out.append(Issue(STRUCTURE, message, f"{path}.{name}[{i}]"))
            # A null paired with a null value is reported while walking the value array.

    def _null_item(self, obj: dict[str, Any], key: str, i: int, path: str, out: list[Issue]) -> None:
        # A null in a primitive array only marks a position whose content is in `_key`.
        extensions = obj.get("_" + key)
        if type(extensions) is list and i < len(extensions) and extensions[i] is not None:
            return
        message = f"null is only allowed where _{key} carries the element's extensions"
        out.append(Issue(STRUCTURE, message, f"{path}.{key}[{i}]"))

    def _bad_array(self, elem: Element, value: Any, path: str, out: list[Issue]) -> bool:
        """Report (and return True) when an array element is not a well-sized JSON array."""
        name = elem.name
        if type(value) is not list:
            message = f"{name} must be a JSON array (max cardinality > 1)"
            out.append(Issue(STRUCTURE, message, f"{path}.{name}"))
            return True
        count = len(value)
        if not count:
            out.append(Issue(STRUCTURE, "Empty arrays are not allowed in FHIR JSON", f"{path}.{name}"))
            return True
        if count > elem.max_items:
            out.append(Issue(STRUCTURE, f"{name} allows at most {elem.max_items} items", f"{path}.{name}"))
        elif count < elem.min_items:
            out.append(Issue(REQUIRED, f"{name} needs at least {elem.min_items} items", f"{path}.{name}"))
        return False

    # -- extra checks on complex values ------------------------------------------------------

    def _extra(self, elem: Element, value: dict[str, Any], path: str, out: list[Issue]) -> None:
        extra = elem.extra
        if extra == REFERENCE:
            reference = value.get("reference")
            if type(reference) is str:
                match = _RELATIVE_REFERENCE.match(reference)
                if match is not None:
                    self._reference_target(match.group(1), elem, path, out)
        elif extra == CODING:
            self._coding(value, elem, path, out)
        elif extra == CODEABLE_CONCEPT:
            self._codeable_concept(value, elem, path, out)

    def _reference_target(self, target: str, elem: Element, path: str, out: list[Issue]) -> None:
        if target not in self._resource_types:
            out.append(Issue(VALUE, f"{target!r} is not a resource type", f"{path}.reference"))
        elif elem.targets is not None and target not in elem.targets:
            allowed = ", ".join(sorted(elem.targets))
            message = f"{elem.name} cannot refer to a {target} (allowed: {allowed})"
            out.append(Issue(VALUE, message, f"{path}.reference"))

    def _coding(self, coding: dict[str, Any], elem: Element, path: str, out: list[Issue]) -> None:
        # Codings from other systems are accepted: only a system the value set enumerates is checked.
        system, code = coding.get("system"), coding.get("code")
        if type(system) is not str or type(code) is not str:
            return  # a missing or mistyped system/code is reported by the walk itself
        codes = elem.expansion.get(system)
        if codes is not None and code not in codes:
            out.append(self._not_in_value_set(code, elem, f"{path}.code"))

    def _codeable_concept(self, concept: dict[str, Any], elem: Element, path: str, out: list[Issue]) -> None:
        # https://hl7.org/fhir/R4/terminologies.html#required: at least one coding must come from
        # the value set. Leniently, only codings whose system the value set enumerates count.
        codings = concept.get("coding")
        if type(codings) is not list:
            return
        first_bad: tuple[int, str] | None = None
        for i, coding in enumerate(codings):
            if type(coding) is not dict:
                continue
            system, code = coding.get("system"), coding.get("code")
            if type(system) is not str or type(code) is not str:
                continue
            codes = elem.expansion.get(system)
            if codes is None:
                continue
            if code in codes:
                return
            if first_bad is None:
                first_bad = (i, code)
        if first_bad is not None:
            i, code = first_bad
            out.append(self._not_in_value_set(code, elem, f"{path}.coding[{i}].code"))

    # -- messages ----------------------------------------------------------------------------

    def _unknown(self, table: Table, key: str, path: str) -> Issue:
        where = f"{path}.{key}"
        for base, names in table.choices.items():
            if key.startswith(base) and key[len(base) : len(base) + 1].isupper():
                message = f"{key} is not an allowed type for {base}[x] (allowed: {', '.join(names)})"
                return Issue(STRUCTURE, message, where)
        if key.startswith("_") and key[1:] in table.elements:
            return Issue(STRUCTURE, f"{key}: only primitive elements may have a _ sibling", where)
        return Issue(STRUCTURE, f"Unknown element {key!r}", where)

    @staticmethod
    def _not_object(elem: Element, value: Any, where: str) -> Issue:
        if type(value) is list:
            message = f"{elem.name} must be a single value, not an array (max cardinality 1)"
            return Issue(STRUCTURE, message, where)
        return Issue(STRUCTURE, f"{elem.name} must be a JSON object ({elem.type_code})", where)

    @staticmethod
    def _not_in_value_set(code: Any, elem: Element, where: str) -> Issue:
        value_set = elem.value_set.split("|", 1)[0]
        return Issue(VALUE, f"{code!r} is not in the value set {value_set} required for {elem.name}", where)


_cache: dict[int, tuple[Definitions, Validator]] = {}
_cache_lock = threading.Lock()


def validator_for(definitions: Definitions) -> Validator:
    """The validator for `definitions`, compiled on first use and kept for the process.

    Keyed by identity: `Definitions` holds dicts and cannot be hashed; the cache keeps the
    definitions alive too, so an id is never reused for a different object.
    """
    entry = _cache.get(id(definitions))
    if entry is None:
        with _cache_lock:
            entry = _cache.get(id(definitions))
            if entry is None:
                entry = (definitions, Validator(definitions))
                _cache[id(definitions)] = entry
    return entry[1]
