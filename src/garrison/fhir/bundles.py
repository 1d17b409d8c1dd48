"""batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction runs entirely inside the caller's database transaction: any failing entry raises,
and the caller's rollback leaves the store unchanged. Entries are processed in the order the spec
prescribes (DELETE, POST, PUT/PATCH, GET); `urn:uuid:` references and conditional references
(`Patient?identifier=...`) are resolved before anything is written, and the response lists the
entries in request order. A batch runs each entry in its own savepoint, so one failure stays local.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from garrison.errors import BadRequest, GarrisonError, Issue, IssueCode, NotFound, PreconditionFailed
from garrison.fhir.audit_trail import failure_record, patient_in
from garrison.fhir.definitions import Definitions
from garrison.fhir.jsoncodec import parse_json
from garrison.fhir.repository import PreparedVersion, Repository, prepare_version
from garrison.fhir.resource import new_id
from garrison.fhir.router import FhirRequest, FhirResponse, FhirRouter

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    304: "304 Not Modified",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    410: "410 Gone",
    412: "412 Precondition Failed",
    413: "413 Payload Too Large",
    422: "422 Unprocessable Entity",
}


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    path: str  # "Patient/123" relative to the base
    query: list[tuple[str, str]]
    full_url: str | None
    resource: Any
    request: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedTransaction:
    """A transaction of plain creates, validated and indexed before its database transaction,
    with the answer to each entry made: under the write lock only the inserts remain."""

    entries: list[_Entry]
    versions: list[PreparedVersion]  # in entry order
    responses: list[FhirResponse]  # in entry order, for when the inserts commit


def prepare_transaction(
    router: FhirRouter, definitions: Definitions, bundle: Any, prefer: str | None
) -> PreparedTransaction | None:
    """Prepare a transaction that needs nothing from the database: only POSTs, no ifNoneExist,
    no conditional references. Anything else (or any error) returns None, and the transaction
    is processed entirely inside its database transaction, where errors are reported."""
    if not isinstance(bundle, dict) or bundle.get("type") != "transaction":
        return None
    raw_entries = bundle.get("entry")
    if not isinstance(raw_entries, list) or not raw_entries:
        return None
    identities: dict[str, str] = {}
    planned: list[tuple[str, dict[str, Any]]] = []  # (assigned id, resource) of each entry
    for raw in raw_entries:
        if not isinstance(raw, dict):
            return None
        request = raw.get("request")
        resource = raw.get("resource")
        if (
            not isinstance(request, dict)
            or str(request.get("method", "")).upper() != "POST"
            or request.get("ifNoneExist")
            or not isinstance(resource, dict)
        ):
            return None
        resource_type = str(request.get("url", "")).strip("/")
        if resource_type not in definitions.resource_types or resource.get("resourceType") != resource_type:
            return None
        assigned = new_id()
        if isinstance(raw.get("fullUrl"), str):
            identities[raw["fullUrl"]] = f"{resource_type}/{assigned}"
        planned.append((assigned, resource))
    versions: list[PreparedVersion] = []
    try:
        entries = [_parse_entry(index, raw, router.base_url) for index, raw in enumerate(raw_entries)]
        for assigned, resource in planned:
            rewritten = _prepared_references(resource, identities)
            if rewritten is None:
                return None
            versions.append(prepare_version(definitions, rewritten, assigned, 1))
    except GarrisonError:
        return None
    responses = [
        router.written_response(_entry_request(entry, prefer), version.stored, 201)
        for entry, version in zip(entries, versions, strict=True)
    ]
    return PreparedTransaction(entries, versions, responses)


def _prepared_references(resource: dict[str, Any], identities: dict[str, str]) -> dict[str, Any] | None:
    """urn rewriting for prepared transactions; None if the resource needs the database."""
    conditional: list[str] = []
    rewritten = _with_entry_ids(resource, identities, conditional)
    return None if conditional else rewritten


def process_bundle(router: FhirRouter, repo: Repository, request: FhirRequest) -> FhirResponse:
    bundle = request.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base URL takes a batch or transaction Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(
            f"Bundle.type must be batch or transaction, not '{kind}'",
            [Issue(IssueCode.VALUE, "Bundle.type must be batch or transaction", "Bundle.type")],
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array")
    if len(raw_entries) > repo.settings.max_bundle_entries:
        raise BadRequest(f"A Bundle may hold at most {repo.settings.max_bundle_entries} entries")
    prefer = request.header("prefer")
    prepared = request.prepared if isinstance(request.prepared, PreparedTransaction) else None
    if prepared is not None:
        responses = _write_prepared(repo, prepared)
    else:
        entries = [_parse_entry(i, e, router.base_url) for i, e in enumerate(raw_entries)]
        process = _transaction if kind == "transaction" else _batch
        responses = process(router, repo, entries, prefer)
    return FhirResponse(
        200,
        {
            "resourceType": "Bundle",
            "type": f"{kind}-response",
            "entry": [_response_entry(r) for r in responses],
        },
    )


def _parse_entry(index: int, raw: Any, base_url: str) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} is not an object")
    req = raw.get("request")
    if not isinstance(req, dict):
        raise BadRequest(
            f"{where} has no request", [Issue(IssueCode.REQUIRED, "request is required", f"{where}.request")]
        )
    method = str(req.get("method", "")).upper()
    url = req.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise BadRequest(
            f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
            [Issue(IssueCode.REQUIRED, "request.method and request.url are required", f"{where}.request")],
        )
    if url.startswith(base_url):
        url = url[len(base_url) :]
    parts = urlsplit(url)
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise BadRequest(
            f"{where} ({method}) has no resource",
            [Issue(IssueCode.REQUIRED, "resource is required", f"{where}.resource")],
        )
    if method == "PATCH" and resource is not None:
        resource = _patch_body(resource, where)
    return _Entry(
        index=index,
        method=method,
        path=parts.path.strip("/"),
        query=parse_qsl(parts.query, keep_blank_values=True),
        full_url=raw.get("fullUrl"),
        resource=resource,
        request=req,
    )


def _patch_body(resource: Any, where: str) -> Any:
    # In a Bundle, a JSON Patch travels as a Binary (https://hl7.org/fhir/R4/http.html#patch).
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            return parse_json(base64.b64decode(resource.get("data", "")))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise BadRequest(f"{where}: the Binary does not hold a JSON Patch") from exc
    return resource


def _entry_request(entry: _Entry, prefer: str | None) -> FhirRequest:
    headers: dict[str, str] = {}
    for field, header in (
        ("ifMatch", "if-match"),
        ("ifNoneMatch", "if-none-match"),
        ("ifNoneExist", "if-none-exist"),
        ("ifModifiedSince", "if-modified-since"),
    ):
        if isinstance(entry.request.get(field), str):
            headers[header] = entry.request[field]
    if prefer:
        headers["prefer"] = prefer
    return FhirRequest(
        method=entry.method, path=entry.path, query=tuple(entry.query), headers=headers, body=entry.resource
    )


# ----------------------------------------------------------------------------------- batch


def _batch(
    router: FhirRouter, repo: Repository, entries: list[_Entry], prefer: str | None
) -> list[FhirResponse]:
    responses: list[FhirResponse] = []
    for entry in entries:
        try:
            with repo.connection.begin_nested():
                responses.append(router.handle(repo, _entry_request(entry, prefer)))
        except GarrisonError as error:
            responses.append(FhirResponse(error.status, error.operation_outcome()))
    return responses


# ----------------------------------------------------------------------------- transaction


def _write_prepared(repo: Repository, prepared: PreparedTransaction) -> list[FhirResponse]:
    """Store a transaction validated and indexed before its database transaction began."""
    failing: int | None = None  # the entry being stored, named in any error
    try:
        with repo.deferred_writes():
            for entry, version in zip(prepared.entries, prepared.versions, strict=True):
                failing = entry.index
                repo.create_prepared(version)
            failing = None  # a failure while flushing the batch belongs to no single entry
    except GarrisonError as error:
        if failing is not None:
            _blame_create(repo, prepared.entries[failing], error)
        raise
    return prepared.responses


def _blame_create(repo: Repository, entry: _Entry, error: GarrisonError) -> None:
    """Point `error` at the create `entry` and record the refusal. Other entries go through
    router.handle, which records their failures; creates are written by the transaction
    directly, so their refusals are recorded here (checklist U2)."""
    error.issues = [_locate(issue, entry.index) for issue in error.issues]
    if repo.context.audited:
        body = entry.resource if isinstance(entry.resource, dict) else {}
        detail = {"path": entry.path, "query": list(entry.query), "entry": entry.index}
        repo.audit.append(failure_record(repo.context, "fhir:create", error, patient_in(body), detail))


def _transaction(
    router: FhirRouter, repo: Repository, entries: list[_Entry], prefer: str | None
) -> list[FhirResponse]:
    _check_unique_targets(entries)
    responses: dict[int, FhirResponse] = {}
    ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
    failing: int | None = None  # the entry being processed, named in any error
    try:
        # 1. Deletes first, so that creates and conditional lookups see their effect.
        for entry in ordered:
            if entry.method == "DELETE":
                failing = entry.index
                responses[entry.index] = router.handle(repo, _entry_request(entry, prefer))
        # 2. Decide every id before writing, then rewrite urn:uuid and conditional references.
        failing = None
        _lock_conditions(repo, entries)
        identities: dict[str, str] = {}
        for entry in entries:
            failing = entry.index
            _resolve_identity(repo, entry, identities)
        for entry in entries:
            failing = entry.index
            if isinstance(entry.resource, dict):
                entry.resource = _rewrite_references(repo, entry.resource, identities, entry.index)
        # 3. Creates, batched; 4. updates and patches; 5. reads, which see all of the above.
        with repo.deferred_writes():
            for entry in ordered:
                if entry.method == "POST":
                    failing = entry.index
                    responses[entry.index] = _create(router, repo, entry, identities, prefer)
            failing = None  # a failure while flushing the batch belongs to no single entry
        for entry in ordered:
            if entry.method in ("PUT", "PATCH"):
                failing = entry.index
                entry.path = _target_path(entry, identities)
                responses[entry.index] = router.handle(repo, _entry_request(entry, prefer))
        for entry in ordered:
            if entry.method in ("GET", "HEAD"):
                failing = entry.index
                responses[entry.index] = router.handle(repo, _entry_request(entry, prefer))
    except GarrisonError as error:
        if failing is not None:
            entry = entries[failing]
            if entry.method == "POST":
                _blame_create(repo, entry, error)
            else:
                error.issues = [_locate(issue, failing) for issue in error.issues]
        raise
    return [responses[e.index] for e in entries]


def _locate(issue: Issue, index: int) -> Issue:
    """Point an issue at the failing entry: `Patient.gender` becomes `Bundle.entry[3].resource.gender`."""
    expression = issue.expression
    if expression is not None:
        tail = expression.split(".", 1)[1] if "." in expression else ""
        expression = f"Bundle.entry[{index}].resource" + (f".{tail}" if tail else "")
    return Issue(issue.code, f"Entry {index}: {issue.diagnostics}", expression, issue.severity)


def _check_unique_targets(entries: list[_Entry]) -> None:
    # https://hl7.org/fhir/R4/http.html#trules : one entry per resource in a transaction.
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.method in ("PUT", "PATCH", "DELETE") and not entry.query and entry.path.count("/") == 1:
            if entry.path in seen:
                raise BadRequest(
                    f"Entries {seen[entry.path]} and {entry.index} both change {entry.path} "
                    "in one transaction"
                )
            seen[entry.path] = entry.index


def _lock_conditions(repo: Repository, entries: list[_Entry]) -> None:
    """Take the locks of every conditional create/update up front, in one global order, so two
    racing transactions can neither both create the same resource nor deadlock on each other.

    The condition strings are the ones the plain HTTP interactions lock, so a transaction also
    excludes a racing `POST` with If-None-Exist or a conditional `PUT`.
    """
    conditions: set[tuple[str, str]] = set()
    for entry in entries:
        resource_type = entry.path.split("/", 1)[0]
        if_none_exist = entry.request.get("ifNoneExist")
        if entry.method == "POST" and isinstance(if_none_exist, str) and if_none_exist:
            conditions.add((resource_type, if_none_exist))
        elif entry.method in ("PUT", "PATCH") and entry.query:
            conditions.add((resource_type, urlencode(entry.query)))
    for resource_type, query in sorted(conditions):
        repo.lock_condition(resource_type, query)


def _resolve_identity(repo: Repository, entry: _Entry, identities: dict[str, str]) -> None:
    """Record in `identities` the `Type/id` the entry's fullUrl (urn:uuid:..., absolute) will have."""
    resource_type = entry.path.split("/", 1)[0]
    if entry.method == "POST":
        repo.check_type(resource_type)
        if_none_exist = entry.request.get("ifNoneExist")
        target: str | None = None
        if isinstance(if_none_exist, str) and if_none_exist:
            matches = repo.find_matches(resource_type, if_none_exist)
            if len(matches) > 1:
                raise PreconditionFailed(f"ifNoneExist matched {len(matches)} resources")
            if matches:
                target = f"{resource_type}/{matches[0]}"
                entry.request["_existing"] = matches[0]
        if target is None:
            assigned = new_id()
            entry.request["_assigned"] = assigned
            target = f"{resource_type}/{assigned}"
    elif entry.method in ("PUT", "PATCH"):
        if entry.query:
            matches = repo.find_matches(resource_type, urlencode(entry.query))
            if len(matches) > 1:
                raise PreconditionFailed(f"The conditional {entry.method} matched {len(matches)} resources")
            if matches:
                target_id = matches[0]
            elif entry.method == "PATCH":
                raise NotFound("The conditional PATCH matched nothing")
            elif isinstance(entry.resource, dict) and isinstance(entry.resource.get("id"), str):
                target_id = entry.resource["id"]
            else:
                target_id = new_id()
            target = f"{resource_type}/{target_id}"
            entry.request["_target"] = target
        else:
            target = entry.path
    else:
        return
    if entry.full_url:
        identities[entry.full_url] = target


def _target_path(entry: _Entry, identities: dict[str, str]) -> str:
    target = entry.request.get("_target")
    if isinstance(target, str):
        entry.query = []
        if isinstance(entry.resource, dict):
            entry.resource["id"] = target.split("/", 1)[1]
        return target
    return entry.path


_URN_PREFIXES = ("urn:uuid:", "urn:oid:")
_CONDITIONAL = re.compile(r"[A-Za-z]+\?")  # a conditional reference: Patient?identifier=...


def _rewrite_references(
    repo: Repository, resource: dict[str, Any], identities: dict[str, str], index: int
) -> dict[str, Any]:
    """Replace urn:uuid/urn:oid and conditional references with the final `Type/id`."""
    conditional: list[str] = []
    rewritten = _with_entry_ids(resource, identities, conditional)
    if conditional:
        rewritten = _resolve_conditionals(repo, rewritten, index)
    return rewritten


def _with_entry_ids(
    resource: dict[str, Any], identities: dict[str, str], conditional: list[str]
) -> dict[str, Any]:
    """A copy of `resource` in which every string that is an entry's urn (`identities`) is that
    entry's `Type/id`; conditional references are listed in `conditional`. Raises BadRequest for
    a reference to a urn no entry has.

    Parts without a urn are shared with `resource`, not copied (a Synthea Bundle holds
    thousands of resources): measured on them, 25-27 us per resource, where serialising,
    substituting and parsing again took 50-76 us."""
    rewritten = _swap_urns(resource, identities, conditional)  # at most 254 levels (parse_json)
    return dict(rewritten) if rewritten is resource else rewritten  # callers may set keys


def _swap_urns(value: Any, identities: dict[str, str], conditional: list[str], key: str | None = None) -> Any:
    """`value` (found under `key`), or a copy with urns swapped where it holds any (see
    `_with_entry_ids`)."""
    kind = type(value)
    if kind is str:
        if value.startswith(_URN_PREFIXES):
            swapped = identities.get(value)
            if swapped is not None:
                return swapped
            if key == "reference":
                raise BadRequest(f"The reference {value} names no entry in the Bundle")
        elif key == "reference" and "?" in value and _CONDITIONAL.match(value):
            conditional.append(value)
        return value
    if kind is dict:
        changed: dict[str, Any] | None = None
        for name, item in value.items():
            new = _swap_urns(item, identities, conditional, name)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[name] = new
        return value if changed is None else changed
    if kind is list:
        replaced: list[Any] | None = None
        for position, item in enumerate(value):
            new = _swap_urns(item, identities, conditional)
            if new is not item:
                if replaced is None:
                    replaced = list(value)
                replaced[position] = new
        return value if replaced is None else replaced
    return value


def _resolve_conditionals(repo: Repository, value: Any, index: int) -> Any:
    if isinstance(value, dict):
        return {
            key: _resolve_reference(repo, item, index)
            if key == "reference" and isinstance(item, str)
            else _resolve_conditionals(repo, item, index)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve_conditionals(repo, v, index) for v in value]
    return value


def _resolve_reference(repo: Repository, reference: str, index: int) -> str:
    if "?" in reference and not reference.startswith(("http://", "https://")):
        # https://hl7.org/fhir/R4/http.html#trules : conditional references.
        resource_type, query = reference.split("?", 1)
        matches = repo.find_matches(resource_type, query)
        if len(matches) != 1:
            raise PreconditionFailed(
                f"The conditional reference '{reference}' matched {len(matches)} resources"
            )
        return f"{resource_type}/{matches[0]}"
    return reference


def _create(
    router: FhirRouter, repo: Repository, entry: _Entry, identities: dict[str, str], prefer: str | None
) -> FhirResponse:
    request = _entry_request(entry, prefer)
    existing = entry.request.get("_existing")
    if isinstance(existing, str):
        stored = repo.read(entry.path.split("/", 1)[0], existing)
        return router.written_response(request, stored, 200)
    outcome = repo.create(
        entry.resource, resource_type=entry.path.split("/", 1)[0], assigned_id=entry.request["_assigned"]
    )
    return router.written_response(request, outcome.stored, 201)


def _response_entry(response: FhirResponse) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    result: dict[str, Any] = {"status": _STATUS_TEXT.get(response.status, str(response.status))}
    headers = response.headers
    if "Location" in headers:
        result["location"] = headers["Location"]
    if "ETag" in headers:
        result["etag"] = headers["ETag"]
    if response.stored is not None:
        result["lastModified"] = response.stored.last_updated
    if response.status >= 400:
        result["outcome"] = response.resource
    elif response.raw is not None:
        entry["resource"] = orjson.Fragment(response.raw)
    elif response.resource is not None:
        entry["resource"] = response.resource
    entry["response"] = result
    return entry
