"""AuditEvent over the FHIR API: read-only, served from the tamper-evident audit log rather than
the resource store (https://hl7.org/fhir/R4/auditevent.html). Who may read it is the access
policy's business (the privacy officer, and backend systems granted it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from garrison.audit.fhir_view import read_audit_event, search_audit_events
from garrison.errors import BadRequest, MethodNotAllowed, NotFound
from garrison.fhir.repository import Repository

AUDIT_EVENT = "AuditEvent"
_PAGING = ("_count", "_offset", "_format", "_pretty", "_total")


def read(repo: Repository, event_id: str) -> dict[str, Any]:
    repo.guard.require("read", AUDIT_EVENT)
    event = read_audit_event(repo.connection, event_id)
    if event is None:
        raise NotFound(f"{AUDIT_EVENT}/{event_id} is not known")
    return event


def search(repo: Repository, query: list[tuple[str, str]], base_url: str) -> dict[str, Any]:
    """A searchset Bundle, paged by offset (the log only grows at its end)."""
    repo.guard.require("search", AUDIT_EVENT)
    params: dict[str, list[str]] = {}
    for name, value in query:
        params.setdefault(name, []).append(value)
    count = _number(params, "_count", repo.settings.default_page_size, repo.settings.max_page_size)
    offset = _number(params, "_offset", 0, None)
    events, total = search_audit_events(repo.connection, params, count, offset)
    kept = [(k, v) for k, v in query if k not in ("_offset",)]
    url = f"{base_url}/{AUDIT_EVENT}"
    links = [{"relation": "self", "url": f"{url}?{urlencode([*kept, ('_offset', str(offset))])}"}]
    if offset + count < total:
        links.append(
            {"relation": "next", "url": f"{url}?{urlencode([*kept, ('_offset', str(offset + count))])}"}
        )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {"fullUrl": f"{url}/{e['id']}", "resource": e, "search": {"mode": "match"}} for e in events
        ],
    }


def refuse_write(method: str) -> None:
    raise MethodNotAllowed(f"{AUDIT_EVENT} is read-only: the audit log is append-only ({method} refused)")


def _number(params: dict[str, list[str]], name: str, default: int, ceiling: int | None) -> int:
    values = params.get(name)
    if not values:
        return default
    if not values[-1].isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    value = int(values[-1])
    return min(value, ceiling) if ceiling is not None else value
