"""A person's name as a patient reads it in Garrison's pages (HumanName,
https://hl7.org/fhir/R4/datatypes.html#HumanName): the usual name, else the official one, else
the first; its `text` when given, else the first given name and the family name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def preferred_name(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    names = [n for n in resource.get("name") or [] if isinstance(n, Mapping)]
    for use in ("usual", "official"):
        found = next((n for n in names if n.get("use") == use), None)
        if found is not None:
            return found
    return names[0] if names else {}


def short_name(resource: Mapping[str, Any], fallback: str) -> str:
    name = preferred_name(resource)
    if name.get("text"):
        return str(name["text"])
    parts = [*(name.get("given") or [])[:1], name.get("family", "")]
    return " ".join(str(p) for p in parts if p) or fallback
