"""`_summary` and `_elements`: return a subset of each resource.

https://hl7.org/fhir/R4/search.html#summary: `true` keeps the elements marked isSummary in the
base definition, `text` keeps text, id, meta and the top-level mandatory elements, `data` drops
the narrative. https://hl7.org/fhir/R4/search.html#elements: `_elements` keeps the named top-level
elements plus id, meta and the mandatory ones. A subsetted resource carries the SUBSETTED tag
(https://hl7.org/fhir/R4/search.html#summary) so no client mistakes it for the whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from garrison.fhir.definitions import Definitions

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = ("resourceType", "id", "meta")


@dataclass
class ElementInfo:
    summary: bool
    mandatory: bool
    children: dict[str, ElementInfo] | None = None  # backbone elements defined inline


@dataclass
class _TypeSpec:
    """JSON key (choice types expanded: valueQuantity, valueString...) -> element info."""

    keys: dict[str, ElementInfo] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # JSON key -> element name (value[x] -> value)


_CACHE: dict[tuple[int, str], tuple[Definitions, _TypeSpec]] = {}
_LOCK = threading.Lock()


def _build(definitions: Definitions, resource_type: str) -> _TypeSpec:
    sd = definitions.structure_definitions.get(resource_type)
    spec = _TypeSpec()
    if sd is None:
        return spec
    elements = sd.get("snapshot", {}).get("element", [])
    infos: dict[str, ElementInfo] = {}
    for element in elements:
        path: str = element["path"]
        if "." not in path:
            continue
        parent_path, _, name = path.rpartition(".")
        info = ElementInfo(summary=bool(element.get("isSummary")), mandatory=element.get("min", 0) >= 1)
        infos[path] = info
        if parent_path == resource_type:
            _register(spec.keys, spec.names, name, element, info)
        elif parent_path in infos:
            parent = infos[parent_path]
            if parent.children is None:
                parent.children = {}
            _register(parent.children, None, name, element, info)
    return spec


def _register(
    keys: dict[str, ElementInfo],
    names: dict[str, str] | None,
    name: str,
    element: dict[str, Any],
    info: ElementInfo,
) -> None:
    if name.endswith("[x]"):
        base = name[:-3]
        for type_ref in element.get("type", []):
            code: str = type_ref["code"]
            key = base + code[0].upper() + code[1:]
            keys[key] = info
            if names is not None:
                names[key] = base
    else:
        keys[name] = info
        if names is not None:
            names[name] = name


def _spec(definitions: Definitions, resource_type: str) -> _TypeSpec:
    key = (id(definitions), resource_type)
    with _LOCK:
        cached = _CACHE.get(key)
        # Holding the Definitions object in the value keeps its id from being reused.
        if cached is None or cached[0] is not definitions:
            cached = (definitions, _build(definitions, resource_type))
            _CACHE[key] = cached
        return cached[1]


def _summary_only(value: Any, keys: dict[str, ElementInfo]) -> Any:
    if isinstance(value, list):
        return [_summary_only(item, keys) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        info = keys.get(key[1:] if key.startswith("_") else key)
        if info is None or not info.summary:
            continue
        out[key] = _summary_only(item, info.children) if info.children else item
    return out


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" and t.get("system") == SUBSETTED["system"] for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    out = dict(resource)
    out["meta"] = meta
    return out


def _top_level(resource: dict[str, Any], spec: _TypeSpec, wanted: Iterable[str]) -> dict[str, Any]:
    names = set(wanted)
    out: dict[str, Any] = {}
    for key, value in resource.items():
        bare = key[1:] if key.startswith("_") else key
        info = spec.keys.get(bare)
        if key in _ALWAYS or spec.names.get(bare, bare) in names or (info is not None and info.mandatory):
            out[key] = value
    return out


def apply_summary(resource: dict[str, Any], mode: str | None, definitions: Definitions) -> dict[str, Any]:
    """`resource` reduced per `_summary=mode`; unchanged for None and `false`."""
    if mode in (None, "false", "count"):
        return resource
    resource_type = resource.get("resourceType", "")
    spec = _spec(definitions, resource_type)
    if mode == "data":
        if "text" not in resource:
            return resource
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    if mode == "text":
        return _tagged(_top_level(resource, spec, ("text",)))
    reduced = _summary_only({k: v for k, v in resource.items() if k not in _ALWAYS}, spec.keys)
    out = {k: resource[k] for k in _ALWAYS if k in resource}
    out.update(reduced)
    return _tagged(out)


def apply_elements(
    resource: dict[str, Any], elements: tuple[str, ...], definitions: Definitions
) -> dict[str, Any]:
    """`resource` reduced to the `_elements` named (names may be given as `Type.name`)."""
    resource_type = resource.get("resourceType", "")
    wanted = [e.removeprefix(resource_type + ".") for e in elements]
    return _tagged(_top_level(resource, _spec(definitions, resource_type), wanted))
