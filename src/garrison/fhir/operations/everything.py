"""`Patient/[id]/$everything` (https://hl7.org/fhir/R4/patient-operation-everything.html).

Returns the patient, every resource in the patient's compartment (from the official
CompartmentDefinition), and every resource those reference, as a paged searchset Bundle.
Membership comes from the reference index in one query, so it costs the same for any number of
resource types. Pages are keyed by (resource_type, id), which keeps links correct while data changes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import Row, Select, select, union_all

from garrison.db.bulk import one_of
from garrison.db.schema import resource, search_reference
from garrison.errors import BadRequest, TooCostly
from garrison.fhir.search.values import date_range

if TYPE_CHECKING:
    from garrison.fhir.operations import OperationCall
    from garrison.fhir.repository import Repository

DEFAULT_PAGE_SIZE = 1000
_IN_CHUNK = 500


class PatientEverything:
    name = "$everything"
    definition = "http://hl7.org/fhir/OperationDefinition/Patient-everything"

    def applies_to(self, resource_type: str | None, resource_id: str | None) -> bool:
        return resource_type == "Patient" and resource_id is not None

    def run(self, repo: Repository, call: OperationCall) -> tuple[int, dict[str, Any]]:
        assert call.resource_id is not None
        patient = repo.read("Patient", call.resource_id)
        count, since, types, cursor = _parse(call, repo.settings.max_page_size)
        keys = _member_keys(repo, patient.id)
        if not repo.guard.unrestricted:
            keys = _visible(repo, keys)
        if types is not None:
            keys = [k for k in keys if k[0] in types]
        if cursor is not None:
            keys = [k for k in keys if k > cursor]
        page_keys = keys[: count + 1]
        has_next = len(page_keys) > count
        page_keys = page_keys[:count]
        rows = _fetch(repo, page_keys, since)

        base = call.base_url
        params = [(k, v) for k, v in call.params if k != "_cursor"]
        path = f"{base}/Patient/{patient.id}/$everything"
        links = [{"relation": "self", "url": path + (f"?{urlencode(params)}" if params else "")}]
        if has_next and page_keys:
            last = page_keys[-1]
            token = base64.urlsafe_b64encode(f"{last[0]}/{last[1]}".encode()).decode()
            links.append({"relation": "next", "url": f"{path}?{urlencode([*params, ('_cursor', token)])}"})
        entries = [
            {
                "fullUrl": f"{base}/{rtype}/{rid}",
                "resource": orjson.Fragment(content),
                "search": {"mode": "match"},
            }
            for rtype, rid, content in rows
        ]
        bundle = {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}
        return 200, bundle


def _parse(
    call: OperationCall, max_page: int
) -> tuple[int, str | None, set[str] | None, tuple[str, str] | None]:
    count = DEFAULT_PAGE_SIZE
    since: str | None = None
    types: set[str] | None = None
    cursor: tuple[str, str] | None = None
    for name, value in call.params:
        if name == "_count":
            if not value.isdigit() or int(value) < 1:
                raise BadRequest("_count must be a positive integer")
            count = int(value)
            if count > max(max_page, DEFAULT_PAGE_SIZE):
                raise TooCostly(f"_count may not exceed {max(max_page, DEFAULT_PAGE_SIZE)}")
        elif name == "_since":
            bounds = date_range(value)
            if bounds is None:
                raise BadRequest("_since must be a FHIR instant")
            since = bounds[0]
        elif name == "_type":
            types = {t.strip() for t in value.split(",") if t.strip()}
        elif name == "_cursor":
            try:
                rtype, rid = base64.urlsafe_b64decode(value.encode()).decode().split("/", 1)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest("The page cursor is not valid") from exc
            cursor = (rtype, rid)
        else:
            raise BadRequest(f"Unknown $everything parameter '{name}'")
    return count, since, types, cursor


def _member_keys(repo: Repository, patient_id: str) -> list[tuple[str, str]]:
    """Sorted (type, id) keys of the patient, its compartment members and what they reference."""
    compartment = repo.definitions.compartments.get("Patient", {})
    params = {p for ps in compartment.values() for p in ps}
    r = search_reference.c
    rows = repo.connection.execute(
        select(r.resource_type, r.resource_id, r.param).where(
            r.target_type == "Patient", r.target_id == patient_id, r.param.in_(params)
        )
    ).all()
    # Unpacked as tuples: a record has thousands of these rows, and a Row's attributes cost more.
    members = {
        (resource_type, resource_id)
        for resource_type, resource_id, param in rows
        if param in compartment.get(resource_type, ())
    }
    members.discard(("Patient", patient_id))
    connection = repo.connection
    targets = _run_by_type(
        repo,
        members | {("Patient", patient_id)},
        lambda resource_type, ids: select(r.target_type, r.target_id).where(
            r.resource_type == resource_type, one_of(connection, r.resource_id, ids), r.target_id.is_not(None)
        ),
    )
    referenced = {(t.target_type, t.target_id) for t in targets if t.target_type}
    # One global order (not "patient first") so that a (type, id) cursor pages it exactly.
    return sorted(members | referenced | {("Patient", patient_id)})


def _visible(repo: Repository, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Only what the caller may see: readable types, and rows its guard admits."""
    admitted: set[tuple[str, str]] = set()
    for resource_type, ids in _by_type(keys):
        if repo.guard.allows("read", resource_type):
            seen = repo.guard.visible_ids(repo.connection, resource_type, ids)
            admitted.update((resource_type, i) for i in seen)
    return [k for k in keys if k in admitted]


def _by_type(keys: set[tuple[str, str]] | list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Keys grouped by type in chunks: `type = :t AND id IN (...)` uses the primary-key and
    (resource_type, resource_id) indexes on both databases, where SQLite cannot use them for a
    row-value `(type, id) IN (...)`."""
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        grouped.setdefault(resource_type, []).append(resource_id)
    return [
        (resource_type, ids[start : start + _IN_CHUNK])
        for resource_type, ids in sorted(grouped.items())
        for start in range(0, len(ids), _IN_CHUNK)
    ]


def _run_by_type(
    repo: Repository,
    keys: set[tuple[str, str]] | list[tuple[str, str]],
    select_for: Callable[[str, list[str]], Select[Any]],
) -> list[Row[Any]]:
    """The rows of `select_for(type, ids)` for every group of `_by_type(keys)`, several groups to a
    statement (UNION ALL, up to `_IN_CHUNK` ids): a patient's record spans a dozen types, and a
    statement per type cost PostgreSQL a round trip each."""
    rows: list[Row[Any]] = []
    batch: list[Select[Any]] = []
    size = 0
    for resource_type, ids in _by_type(keys):
        if batch and size + len(ids) > _IN_CHUNK:
            rows.extend(repo.connection.execute(union_all(*batch)))
            batch, size = [], 0
        batch.append(select_for(resource_type, ids))
        size += len(ids)
    if batch:
        rows.extend(repo.connection.execute(union_all(*batch)))
    return rows


def _fetch(repo: Repository, keys: list[tuple[str, str]], since: str | None) -> list[tuple[str, str, str]]:
    def rows_of(resource_type: str, ids: list[str]) -> Select[Any]:
        query = select(resource.c.resource_type, resource.c.id, resource.c.content).where(
            resource.c.resource_type == resource_type,
            one_of(repo.connection, resource.c.id, ids),
            resource.c.deleted.is_(False),
        )
        return query if since is None else query.where(resource.c.last_updated >= since)

    found = {(row.resource_type, row.id): row.content for row in _run_by_type(repo, keys, rows_of)}
    return [(k[0], k[1], found[k]) for k in keys if k in found]
