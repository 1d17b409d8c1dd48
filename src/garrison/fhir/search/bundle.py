"""The searchset Bundle (https://hl7.org/fhir/R4/bundle.html#searchset, https://hl7.org/fhir/R4/search.html#bundle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from garrison.fhir.search.summary import apply_elements, apply_summary

if TYPE_CHECKING:
    from garrison.fhir.search.query import SearchPage, SearchRequest


def search_path(request: SearchRequest, base_url: str) -> str:
    base = base_url.rstrip("/")
    if request.compartment is not None:
        compartment_type, owner = request.compartment
        return f"{base}/{compartment_type}/{owner}/{request.resource_type or '*'}"
    if request.resource_type is not None:
        return f"{base}/{request.resource_type}"
    return base


def _link(path: str, params: list[tuple[str, str]]) -> str:
    # Characters that are legal in a query component stay readable (RFC 3986 section 3.4).
    return f"{path}?{urlencode(params, safe=':/|,$')}" if params else path


def search_bundle(page: SearchPage, request: SearchRequest, base_url: str) -> dict[str, Any]:
    """Render `page` as a searchset Bundle.

    Links repeat the parameters as the server understood them; `next`/`previous` carry an opaque
    `_cursor`. `_summary` applies to every entry, `_elements` to the matches only (an included
    resource is of another type, whose element names differ).
    """
    path = search_path(request, base_url)
    base = base_url.rstrip("/")
    params = list(page.accepted)
    self_params = [*params, ("_cursor", page.cursor)] if page.cursor else params
    links = [{"relation": "self", "url": _link(path, self_params)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": _link(path, [*params, ("_cursor", page.next_cursor)])})
    if page.previous_cursor:
        links.append(
            {"relation": "previous", "url": _link(path, [*params, ("_cursor", page.previous_cursor)])}
        )

    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if page.summary == "count":
        return bundle
    definitions = page.definitions
    entries: list[dict[str, Any]] = []
    for stored, mode in [*((m, "match") for m in page.matches), *((i, "include") for i in page.included)]:
        summarised = page.summary not in (None, "false")
        trimmed = page.elements is not None and mode == "match"
        # Untouched entries embed the stored text as reads serve it: no parse and re-serialise.
        plain = not summarised and not trimmed
        content: Any = orjson.Fragment(stored.content or "{}") if plain else stored.parsed()
        if summarised:
            assert definitions is not None
            content = apply_summary(content, page.summary, definitions)
        if trimmed:
            assert definitions is not None and page.elements is not None
            content = apply_elements(content, page.elements, definitions)
        entries.append(
            {
                "fullUrl": f"{base}/{stored.resource_type}/{stored.id}",
                "resource": content,
                "search": {"mode": mode},
            }
        )
    for warning in page.warnings:
        entries.append(
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "warning", "code": "too-costly", "diagnostics": warning}],
                },
                "search": {"mode": "outcome"},
            }
        )
    if entries:
        bundle["entry"] = entries
    return bundle
