"""History interactions: instance, type and whole-system (https://hl7.org/fhir/R4/http.html#history).

Versions are listed newest first. Paging is by the history table's global sequence number, so a
page link stays correct while new versions are written: new versions only ever appear before the
first page, never inside a page already fetched.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import ColumnElement, Connection, and_, exists, false, or_, select

from garrison.db.schema import resource, resource_history
from garrison.errors import BadRequest, TooCostly
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.aliases import Aliases
from garrison.fhir.search.values import date_range
from garrison.settings import Settings

if TYPE_CHECKING:
    from garrison.fhir.authz.guard import Guard


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    resource_type: str | None = None
    resource_id: str | None = None
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    seq: int
    stored: StoredResource
    method: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    total: int | None
    next_cursor: int | None


def _since_bound(value: str, name: str) -> str:
    bounds = date_range(value)
    if bounds is None:
        raise BadRequest(f"{name} must be a FHIR instant, got '{value}'")
    return bounds[0]


def _visible_versions(guard: Guard, types: list[str]) -> ColumnElement[bool]:
    """Versions of resources whose current version the caller may see (the guard decides on
    current index rows; a version of a now-invisible resource stays hidden)."""
    h = resource_history.c
    options: list[ColumnElement[bool]] = []
    for resource_type in types:
        aliases = Aliases()
        res = aliases(resource)
        visible = guard.visible(resource_type, res, aliases)
        if visible is None:
            options.append(h.resource_type == resource_type)
            continue
        options.append(
            and_(
                h.resource_type == resource_type,
                exists().where(res.c.resource_type == resource_type, res.c.id == h.id, visible),
            )
        )
    if not options:
        return false()
    return options[0] if len(options) == 1 else or_(*options)


def read_history(
    connection: Connection, settings: Settings, request: HistoryRequest, *, guard: Guard | None = None
) -> HistoryPage:
    """One page of history. With a restricting `guard`, only versions of resources the caller may
    see, of types it may read (instance) or search (type and system history)."""
    h = resource_history.c
    count = settings.default_page_size
    since: str | None = None
    at: str | None = None
    cursor: int | None = None
    for name, value in request.params:
        if name == "_count":
            if not value.isdigit():
                raise BadRequest(f"_count must be a non-negative integer, got '{value}'")
            count = int(value)
            if count > settings.max_page_size:
                raise TooCostly(f"_count may not exceed {settings.max_page_size}")
        elif name == "_since":
            since = _since_bound(value, "_since")
        elif name == "_at":
            at = _since_bound(value, "_at")
        elif name == "_cursor":
            cursor = _decode_cursor(value)
        elif name in ("_format", "_pretty", "_summary", "_elements"):
            continue
        else:
            raise BadRequest(f"Unknown history parameter '{name}'")

    query = select(h.seq, h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content, h.method)
    if request.resource_type is not None:
        query = query.where(h.resource_type == request.resource_type)
    if request.resource_id is not None:
        query = query.where(h.id == request.resource_id)
    if since is not None:
        query = query.where(h.last_updated >= since)
    if at is not None:
        # Versions current at `at`: written at or before it (the newest per resource is current).
        query = query.where(h.last_updated <= at + "+00:00")
    if cursor is not None:
        query = query.where(h.seq < cursor)
    if guard is not None and not guard.unrestricted:
        if request.resource_type is not None:
            types = [request.resource_type]
        else:
            types = guard.readable_types("search", sorted(guard.definitions.resource_types))
        query = query.where(_visible_versions(guard, types))
    rows = connection.execute(query.order_by(h.seq.desc()).limit(count + 1)).all()
    entries = [HistoryEntry(seq=r.seq, stored=StoredResource(*r[1:7]), method=r.method) for r in rows[:count]]
    next_cursor = entries[-1].seq if len(rows) > count and entries else None
    return HistoryPage(entries=entries, total=None, next_cursor=next_cursor)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def _decode_cursor(value: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(value.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The history page cursor is not valid") from exc


def history_bundle(page: HistoryPage, request: HistoryRequest, base_url: str, path: str) -> dict[str, Any]:
    params = [(k, v) for k, v in request.params if k != "_cursor"]
    self_link = f"{base_url}/{path}" + (f"?{urlencode(params)}" if params else "")
    links = [{"relation": "self", "url": self_link}]
    if page.next_cursor is not None:
        next_params = [*params, ("_cursor", _encode_cursor(page.next_cursor))]
        links.append({"relation": "next", "url": f"{base_url}/{path}?{urlencode(next_params)}"})
    entries: list[dict[str, Any]] = []
    for item in page.entries:
        stored = item.stored
        url = f"{stored.resource_type}/{stored.id}"
        entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
        if stored.content is not None:
            entry["resource"] = orjson.Fragment(stored.content)
        method = "POST" if item.method == "POST" else item.method
        entry["request"] = {
            "method": "PUT" if method == "PATCH" else method,
            "url": url if method != "POST" else stored.resource_type,
        }
        status = (
            "201 Created" if stored.version_id == 1 else ("204 No Content" if stored.deleted else "200 OK")
        )
        entry["response"] = {
            "status": status,
            "etag": stored.etag,
            "lastModified": stored.last_updated,
        }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["entry"] = entries
    return bundle
