"""The FHIR router: a plain request in, a status and resource out; no web framework here.

The HTTP API, the entries of batch/transaction Bundles, the command line and tests all go through
`FhirRouter.handle`, so each interaction is implemented once
(https://hl7.org/fhir/R4/http.html).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from garrison.errors import BadRequest, GarrisonError, MethodNotAllowed, NotFound, NotSupported
from garrison.fhir import audit_events
from garrison.fhir.audit_trail import access_records, failure_record, patient_in
from garrison.fhir.capability import capability_statement
from garrison.fhir.definitions import Definitions
from garrison.fhir.history import HistoryRequest, history_bundle, read_history
from garrison.fhir.jsoncodec import dumps_bytes, parse_json
from garrison.fhir.operations import OPERATIONS, OperationCall
from garrison.fhir.repository import Repository, WriteOutcome
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.query import SearchRequest, search_bundle
from garrison.fhir.search.summary import apply_elements, apply_summary

# Parameters that shape the response rather than select resources.
_FORMAT_PARAMS = frozenset({"_format", "_pretty"})


@dataclass(frozen=True, slots=True)
class FhirRequest:
    method: str
    path: str  # relative to the FHIR base, without leading slash: "Patient/123/_history/2"
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON, or None
    prepared: Any = None  # work done before the transaction began (see FhirRouter.prepare)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(slots=True)
class FhirResponse:
    status: int
    resource: Any = None  # a dict (may hold orjson.Fragment values) or None
    raw: str | None = None  # pre-serialised resource JSON, served as-is
    headers: dict[str, str] = field(default_factory=dict)
    stored: StoredResource | None = None  # the version written or read, for bundle responses
    returned: list[StoredResource] | None = None  # what a search or history returned, for audit

    def body_bytes(self) -> bytes | None:
        if self.raw is not None:
            return self.raw.encode()
        if self.resource is None:
            return None
        return dumps_bytes(self.resource)

    def json(self) -> Any:
        """The body as plain JSON values (Fragments resolved): for bundles and tests."""
        data = self.body_bytes()
        return None if data is None else parse_json(data)


# Reads audit here with what they returned; writes audit in the repository, where they happen.
_ACCESS_ACTIONS = frozenset({"fhir:read", "fhir:vread", "fhir:search", "fhir:history"})


def _audit_action(segments: list[str], method: str) -> str | None:
    """The structured audit action of a request; None for metadata and Bundles (whose entries
    are audited one by one)."""
    if not segments:
        return "fhir:search" if method == "GET" else None
    if segments[0] == "metadata":
        return None
    operation = next((s for s in segments if s.startswith("$")), None)
    if operation is not None:
        return f"fhir:operation:{operation[1:]}"
    if "_history" in segments:
        return "fhir:vread" if len(segments) == 4 else "fhir:history"
    if segments[-1] == "_search":
        return "fhir:search"  # POST [type]/_search is a search (http.html#search)
    if method == "GET":
        return "fhir:read" if len(segments) == 2 else "fhir:search"
    return {"POST": "fhir:create", "PUT": "fhir:update", "PATCH": "fhir:patch", "DELETE": "fhir:delete"}.get(
        method
    )


def _returned(response: FhirResponse) -> list[StoredResource]:
    if response.returned is not None:
        return response.returned
    if response.stored is not None:
        return [response.stored]
    body = response.resource
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        # An operation's Bundle: its entries' identities are what was disclosed.
        found: list[StoredResource] = []
        for entry in body.get("entry", ()):
            parts = str(entry.get("fullUrl", "")).rsplit("/", 2)
            if len(parts) == 3:
                found.append(StoredResource(parts[1], parts[2], 0, "", False, None))
        return found
    return []


def _lenient(request: FhirRequest) -> bool:
    # https://hl7.org/fhir/R4/search.html#errors : Prefer: handling=lenient ignores unknown parameters.
    return "handling=lenient" in (request.header("prefer") or "").replace(" ", "")


def http_date(iso_instant: str) -> str:
    return format_datetime(datetime.fromisoformat(iso_instant), usegmt=True)


def _version_headers(stored: StoredResource, base_url: str) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": http_date(stored.last_updated),
        "Location": f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}",
    }


class FhirRouter:
    """Dispatches FHIR interactions to the repository bound to the caller."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def prepare(self, definitions: Definitions, request: FhirRequest) -> FhirRequest:
        """Do the CPU-heavy, database-free part of a request before its transaction opens.

        With SQLite's single writer, validating and indexing a large transaction Bundle inside
        the write lock would serialise that work across every worker; done here, it runs in
        parallel and the lock is held only for the inserts.
        """
        if request.method.upper() == "POST" and not request.path.strip("/"):
            from garrison.fhir.bundles import prepare_transaction

            prepared = prepare_transaction(self, definitions, request.body, request.header("prefer"))
            if prepared is not None:
                return replace(request, prepared=prepared)
        return request

    def handle(self, repo: Repository, request: FhirRequest) -> FhirResponse:
        segments = [s for s in request.path.strip("/").split("/") if s]
        method = request.method.upper()
        query = tuple((k, v) for k, v in request.query if k not in _FORMAT_PARAMS)
        action = _audit_action(segments, method)
        try:
            if segments and segments[0] == audit_events.AUDIT_EVENT:
                response = self._audit_event(repo, segments, method, query)
            else:
                handler = self._route(segments, method)
                if segments and not segments[0].startswith(("$", "_")) and segments[0] != "metadata":
                    repo.check_type(segments[0])
                response = handler(repo, request, segments, query)
        except GarrisonError as error:
            if repo.context.audited and action is not None:
                patient = segments[1] if len(segments) >= 2 and segments[0] == "Patient" else None
                if patient is None and isinstance(request.body, dict):
                    # A write: the record it was aimed at (checklist U1, U2).
                    patient = patient_in(request.body)
                detail = {"path": request.path, "query": list(query)}
                repo.audit.append(failure_record(repo.context, action, error, patient, detail))
            raise
        if repo.context.audited and action is not None and (
            action in _ACCESS_ACTIONS or action.startswith("fhir:operation:")
        ):
            repo.audit.extend(
                access_records(
                    repo.context,
                    action,
                    _returned(response),
                    {"path": request.path, "query": list(query)},
                    patient=segments[1] if len(segments) == 3 and segments[0] == "Patient" else None,
                )
            )
        return response

    # ------------------------------------------------------------------------------ routing

    def reads_one_resource(self, request: FhirRequest) -> bool:
        """Whether `request` is a read or vread: one row by primary key, so its cost is bounded
        whatever the store holds (unlike a search, a history or an operation)."""
        return self._get_handler(request) in (self._read, self._vread)

    def read_target(self, request: FhirRequest) -> tuple[str, str] | None:
        """(type, id) when `request` is a read of the current version, else None."""
        if self._get_handler(request) != self._read:
            return None
        segments = [s for s in request.path.strip("/").split("/") if s]
        return segments[0], segments[1]

    def _get_handler(
        self, request: FhirRequest
    ) -> Callable[[Repository, FhirRequest, list[str], tuple[tuple[str, str], ...]], FhirResponse] | None:
        segments = [s for s in request.path.strip("/").split("/") if s]
        if request.method.upper() != "GET" or not segments or segments[0] == audit_events.AUDIT_EVENT:
            return None
        try:
            return self._route(segments, "GET")
        except GarrisonError:
            return None

    def _audit_event(
        self, repo: Repository, segments: list[str], method: str, query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        if method not in ("GET", "HEAD"):
            audit_events.refuse_write(method)
        if len(segments) == 1:
            return FhirResponse(200, audit_events.search(repo, list(query), self.base_url))
        if len(segments) == 2:
            return FhirResponse(200, audit_events.read(repo, segments[1]))
        raise NotSupported("AuditEvent supports read and search only")

    def _route(
        self, segments: list[str], method: str
    ) -> Callable[[Repository, FhirRequest, list[str], tuple[tuple[str, str], ...]], FhirResponse]:
        n = len(segments)
        table: dict[str, Any]
        if n == 0:
            table = {"GET": self._system_search, "POST": self._bundle}
        elif segments[0] == "metadata" and n == 1:
            table = {"GET": self._metadata}
        elif segments[0] == "_history" and n == 1:
            table = {"GET": self._history}
        elif segments[0] == "_search" and n == 1:
            table = {"POST": self._system_search}
        elif segments[0].startswith("$") and n == 1:
            table = {"GET": self._operation, "POST": self._operation}
        elif n == 1:
            table = {
                "GET": self._search,
                "POST": self._create,
                "PUT": self._conditional_update,
                "DELETE": self._conditional_delete,
                "PATCH": self._conditional_patch,
            }
        elif n == 2 and segments[1] == "_search":
            table = {"POST": self._search}
        elif n == 2 and segments[1] == "_history":
            table = {"GET": self._history}
        elif n == 2 and segments[1].startswith("$"):
            table = {"GET": self._operation, "POST": self._operation}
        elif n == 2:
            table = {"GET": self._read, "PUT": self._update, "PATCH": self._patch, "DELETE": self._delete}
        elif n == 3 and segments[2] == "_history":
            table = {"GET": self._history}
        elif n == 3 and segments[2].startswith("$"):
            table = {"GET": self._operation, "POST": self._operation}
        elif n == 3:
            table = {"GET": self._compartment_search}
        elif n == 4 and segments[2] == "_history":
            table = {"GET": self._vread}
        elif n == 4 and segments[3] == "_search":
            table = {"POST": self._compartment_search}
        else:
            raise NotFound(f"No FHIR interaction lives at '/{'/'.join(segments)}'")
        handler = table.get(method)
        if handler is None:
            raise MethodNotAllowed(f"{method} is not allowed on '/{'/'.join(segments)}'")
        result: Callable[[Repository, FhirRequest, list[str], tuple[tuple[str, str], ...]], FhirResponse]
        result = handler
        return result

    # ------------------------------------------------------------------------------- reading

    def _metadata(self, repo: Repository, request: FhirRequest, *_: Any) -> FhirResponse:
        return FhirResponse(200, capability_statement(repo.definitions, self.base_url))

    def _shaped(
        self,
        repo: Repository,
        stored: StoredResource,
        query: tuple[tuple[str, str], ...],
        headers: dict[str, str],
    ) -> FhirResponse:
        """Apply `_summary` / `_elements` to a read (https://hl7.org/fhir/R4/search.html#summary)."""
        params = dict(query)
        summary = params.get("_summary")
        elements = params.get("_elements")
        if summary is None and elements is None:
            return FhirResponse(200, raw=stored.content, headers=headers, stored=stored)
        if summary not in (None, "true", "false", "text", "data"):
            raise BadRequest(f"_summary must be true, false, text or data on a read, not '{summary}'")
        body = stored.parsed()
        if summary is not None:
            body = apply_summary(body, summary, repo.definitions)
        if elements:
            body = apply_elements(body, tuple(e.strip() for e in elements.split(",")), repo.definitions)
        return FhirResponse(200, body, headers=headers, stored=stored)

    def _read(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        stored = repo.read(seg[0], seg[1])
        headers = _version_headers(stored, self.base_url)
        del headers["Location"]
        # https://hl7.org/fhir/R4/http.html#cread
        if_none_match = request.header("if-none-match")
        if if_none_match and if_none_match.strip() in (stored.etag, f'"{stored.version_id}"'):
            return FhirResponse(304, headers=headers)
        return self._shaped(repo, stored, query, headers)

    def _vread(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        stored = repo.vread(seg[0], seg[1], seg[3])
        headers = _version_headers(stored, self.base_url)
        del headers["Location"]
        return self._shaped(repo, stored, query, headers)

    def _search_params(
        self, request: FhirRequest, query: tuple[tuple[str, str], ...]
    ) -> list[tuple[str, str]]:
        params = list(query)
        # POST _search carries parameters as a form body; the web layer parses it into `body`.
        if request.method.upper() == "POST" and isinstance(request.body, list):
            params.extend((str(k), str(v)) for k, v in request.body)
        return params

    def _search(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        search = SearchRequest(
            resource_type=seg[0], params=self._search_params(request, query), lenient=_lenient(request)
        )
        page = repo.search(search)
        return FhirResponse(
            200, search_bundle(page, search, self.base_url), returned=[*page.matches, *page.included]
        )

    def _system_search(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        search = SearchRequest(
            resource_type=None, params=self._search_params(request, query), lenient=_lenient(request)
        )
        page = repo.search(search)
        return FhirResponse(
            200, search_bundle(page, search, self.base_url), returned=[*page.matches, *page.included]
        )

    def _compartment_search(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        # https://hl7.org/fhir/R4/http.html#vsearch : GET [base]/Patient/123/Observation
        compartment_type, compartment_id, target = seg[0], seg[1], seg[2]
        if compartment_type not in repo.definitions.compartments:
            raise NotFound(f"{compartment_type} is not a compartment")
        repo.check_type(target)
        search = SearchRequest(
            resource_type=target,
            params=self._search_params(request, query),
            compartment=(compartment_type, compartment_id),
            lenient=_lenient(request),
        )
        page = repo.search(search)
        return FhirResponse(
            200, search_bundle(page, search, self.base_url), returned=[*page.matches, *page.included]
        )

    def _history(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        resource_type = seg[0] if len(seg) >= 2 else None
        resource_id = seg[1] if len(seg) == 3 else None
        if resource_type is not None:
            repo.check_type(resource_type)
        if resource_type is not None and resource_id is not None:
            repo.guard.require("read", resource_type)
            current = repo.get_current(resource_type, resource_id)
            if current is None or not repo.sees_id(resource_type, resource_id):
                raise NotFound(f"{resource_type}/{resource_id} is not known")
        elif resource_type is not None:
            repo.guard.require("search", resource_type)
        repo.flush()
        history_request = HistoryRequest(resource_type, resource_id, query)
        page = read_history(repo.connection, repo.settings, history_request, guard=repo.guard)
        bundle = history_bundle(page, history_request, self.base_url, "/".join(seg))
        return FhirResponse(200, bundle, returned=[entry.stored for entry in page.entries])

    # ------------------------------------------------------------------------------- writing

    def written_response(self, request: FhirRequest, stored: StoredResource, status: int) -> FhirResponse:
        """The answer to a write, shaped by `Prefer: return=minimal|representation|OperationOutcome`
        (https://hl7.org/fhir/R4/http.html#ops)."""
        headers = _version_headers(stored, self.base_url)
        prefer = (request.header("prefer") or "").replace(" ", "")
        if "return=minimal" in prefer:
            return FhirResponse(status, headers=headers, stored=stored)
        if "return=OperationOutcome" in prefer:
            written = f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "information",
                        "code": "informational",
                        "diagnostics": f"Stored {written}",
                    }
                ],
            }
            return FhirResponse(status, outcome, headers=headers, stored=stored)
        return FhirResponse(status, raw=stored.content, headers=headers, stored=stored)

    def _written(self, request: FhirRequest, outcome: WriteOutcome) -> FhirResponse:
        return self.written_response(request, outcome.stored, 201 if outcome.created else 200)

    def _create(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        if query:
            # Search criteria on a create would be silently ignored; conditions go in If-None-Exist.
            raise BadRequest(
                "A create takes no search parameters; send conditions in the If-None-Exist header"
            )
        if_none_exist = request.header("if-none-exist")
        outcome = repo.create(request.body, if_none_exist=if_none_exist, resource_type=seg[0])
        return self.written_response(request, outcome.stored, 201 if outcome.changed else 200)

    def _update(self, repo: Repository, request: FhirRequest, seg: list[str], *_: Any) -> FhirResponse:
        outcome = repo.update(seg[0], seg[1], request.body, if_match=request.header("if-match"))
        return self._written(request, outcome)

    def _conditional_update(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        if not query:
            raise BadRequest("PUT on a resource type needs search criteria (conditional update)")
        outcome = repo.conditional_update(
            seg[0], urlencode(query), request.body, if_match=request.header("if-match")
        )
        return self._written(request, outcome)

    def _patch(self, repo: Repository, request: FhirRequest, seg: list[str], *_: Any) -> FhirResponse:
        outcome = repo.patch(seg[0], seg[1], request.body, if_match=request.header("if-match"))
        return self._written(request, outcome)

    def _conditional_patch(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        if not query:
            raise BadRequest("PATCH on a resource type needs search criteria (conditional patch)")
        matches = repo.find_single_match(seg[0], urlencode(query), "The conditional patch")
        if not matches:
            raise NotFound(f"The conditional patch matched no {seg[0]}")
        outcome = repo.patch(seg[0], matches[0], request.body, if_match=request.header("if-match"))
        return self._written(request, outcome)

    def _delete(self, repo: Repository, request: FhirRequest, seg: list[str], *_: Any) -> FhirResponse:
        tombstone = repo.delete(seg[0], seg[1], if_match=request.header("if-match"))
        headers = {"ETag": tombstone.etag} if tombstone else {}
        return FhirResponse(204, headers=headers)

    def _conditional_delete(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        if not query:
            raise BadRequest("DELETE on a resource type needs search criteria (conditional delete)")
        repo.conditional_delete(seg[0], urlencode(query))
        return FhirResponse(204)

    # ---------------------------------------------------------------------- bundles, operations

    def _bundle(self, repo: Repository, request: FhirRequest, *_: Any) -> FhirResponse:
        from garrison.fhir.bundles import process_bundle  # bundles call back into this router

        return process_bundle(self, repo, request)

    def _operation(
        self, repo: Repository, request: FhirRequest, seg: list[str], query: tuple[tuple[str, str], ...]
    ) -> FhirResponse:
        name = seg[-1]
        resource_type = seg[0] if len(seg) >= 2 else None
        resource_id = seg[1] if len(seg) == 3 else None
        if resource_type is not None:
            repo.check_type(resource_type)
        operation = OPERATIONS.get(name)
        if operation is None or not operation.applies_to(resource_type, resource_id):
            raise NotSupported(f"Operation {name} is not supported on '/{'/'.join(seg)}'")
        repo.guard.require_operation(name.removeprefix("$"))
        call = OperationCall(
            resource_type=resource_type,
            resource_id=resource_id,
            params=query,
            body=request.body,
            method=request.method.upper(),
            base_url=self.base_url,
        )
        status, resource = operation.run(repo, call)
        return FhirResponse(status, resource)
