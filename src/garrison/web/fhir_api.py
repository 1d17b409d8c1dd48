"""The FHIR REST API over HTTP: adapts Starlette requests to `FhirRouter`, owns the transaction,
and renders every error once as an OperationOutcome (https://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from garrison.audit.chain import append_records
from garrison.audit.records import AuditRecord
from garrison.audit.sink import AuditSink
from garrison.callers import caller_lookups, context_for_token
from garrison.clock import now
from garrison.db.async_pg import AsyncConnections
from garrison.db.engine import (
    Lookup,
    RoundTripRefused,
    answering_only,
    is_postgres,
    prefetch_async,
    prefetched,
    read_transaction,
    refuse_round_trips,
    write_transaction,
)
from garrison.db.statistics import StatisticsKeeper
from garrison.errors import BadRequest, GarrisonError, NotSupported, PayloadTooLarge, Unauthorized
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.jsoncodec import json_default, parse_json
from garrison.fhir.repository import Repository, current_row_lookup
from garrison.fhir.router import FhirRequest, FhirResponse, FhirRouter
from garrison.settings import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json", "text/json")
_XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "xml")
# Operations that only read, even when POSTed.
_READ_ONLY_OPERATIONS = ("$validate", "$everything", "$match")
# The only FHIR paths served without a token (checklist A1: the allow-list).
PUBLIC_PATHS = frozenset({"metadata", ".well-known/smart-configuration"})
# See FhirApi._loop_misses.
_MISSES_BEFORE_THREADS = 2
_THREADS_FOR_SECONDS = 60.0
_MAX_REMEMBERED_CALLERS = 10_000


class FhirApi:
    """One per application: holds the engine and definitions; each request gets its own repository."""

    def __init__(
        self, settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.definitions = definitions
        self.audit = audit
        self.router = FhirRouter(settings.base_url)
        self.statistics = StatisticsKeeper(engine)
        # A read by id from the embedded database is a fraction of a millisecond of CPU with no
        # network wait, so it runs on the event loop: the hand-over to a worker thread and back
        # cost more than the read (read by id over HTTP, SQLite, in paired runs: 2,705 and
        # 2,814 requests/s on the loop against 1,940 and 2,061 in threads).
        self.reads_on_event_loop = not is_postgres(engine)
        # Over a network, one round trip for the lookups every request makes (`_lookups`).
        self.prefetches = is_postgres(engine)
        # PostgreSQL: a read by id runs on the loop too, but awaits its two round trips
        # (`_read_awaiting`). Other requests can take any time: those go to worker threads.
        self.awaits_reads = is_postgres(engine)
        self._on_loop = threading.local()  # an event loop's `_LoopReads`, on the loop's thread
        self.reads_redone_in_threads = 0  # reads that needed more than the prefetch (tests, metrics)
        # Callers (by their Authorization header's hash) whose last reads on the loop needed
        # more than the prefetch: how many in a row, and when the last did. Once is a process
        # cache to fill (the Consent rules of a new stamp, say); twice, most likely a caller
        # whose every read needs more (a user's token needs their account), whose reads then go
        # straight to threads for a while.
        self._loop_misses: dict[int, tuple[int, float]] = {}

    async def __call__(self, request: Request) -> Response:
        try:
            source = request.client.host if request.client else None
            path = request.path_params.get("path", "")
            context: AccessContext | None = None
            if request.method in ("GET", "HEAD") and not _is_public(request.method, path):
                # Nothing to read from the body: authenticate and answer in one transaction.
                reading = FhirRequest(
                    method=request.method,
                    path=path,
                    query=tuple(request.query_params.multi_items()),
                    headers={k.lower(): v for k, v in request.headers.items()},
                )
                authorization = request.headers.get("authorization")
                if self.reads_on_event_loop and self.router.reads_one_resource(reading):
                    # See __init__: cheaper here than the hand-over to a worker thread.
                    response = self._read_as_caller(reading, authorization, source)
                elif self.awaits_reads and self._awaits(reading, authorization):
                    response = await self._read_awaiting(reading, authorization, source)
                else:
                    response = await run_in_threadpool(self._read_as_caller, reading, authorization, source)
                return _render(response, pretty=request.query_params.get("_pretty") == "true")
            if not _is_public(request.method, path):
                # checklist A1: who is asking is settled before anything the request carries
                # (body, format) is looked at; an unknown caller learns nothing else.
                context = await run_in_threadpool(
                    self._caller, request.method, path, request.headers.get("authorization"), source
                )
            fhir_request = await self._adapt(request)
            response = await run_in_threadpool(self._execute, fhir_request, context)
        except GarrisonError as error:
            response = FhirResponse(error.status, error.operation_outcome())
            if isinstance(error, Unauthorized):
                # https://datatracker.ietf.org/doc/html/rfc6750#section-3
                response.headers["WWW-Authenticate"] = 'Bearer realm="garrison"'
        except Exception:
            # Safety net: log the cause, answer without internals.
            log.exception("Unhandled error serving %s %s", request.method, request.url.path)
            response = FhirResponse(
                500,
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "fatal", "code": "exception", "diagnostics": "Internal error"}],
                },
            )
        return _render(response, pretty=request.query_params.get("_pretty") == "true")

    async def _adapt(self, request: Request) -> FhirRequest:
        _check_format(request)
        path = request.path_params.get("path", "")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise PayloadTooLarge(f"The request body exceeds {self.settings.max_body_bytes} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > self.settings.max_body_bytes:
                raise PayloadTooLarge(f"The request body exceeds {self.settings.max_body_bytes} bytes")
        body = _parse_body(bytes(raw), request.headers.get("content-type", ""))
        return FhirRequest(
            method=request.method,
            path=path,
            query=tuple(request.query_params.multi_items()),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )

    def _execute(self, request: FhirRequest, context: AccessContext | None) -> FhirResponse:
        if context is None:
            with read_transaction(self.engine) as connection:
                public = AccessContext.system("fhir-metadata")
                return self.router.handle(
                    Repository(connection, self.definitions, self.settings, public), request
                )
        request = self.router.prepare(self.definitions, request)
        read_only = _is_read_only(request)
        transaction = read_transaction if read_only else write_transaction
        repo: Repository | None = None
        try:
            with transaction(self.engine) as connection:
                repo = Repository(connection, self.definitions, self.settings, context)
                response = self.router.handle(repo, request)
                if not read_only and repo.audit:
                    # Changes and their audit commit together (checklist U1).
                    append_records(connection, repo.audit)
            if not read_only:
                self.statistics.note_writes(repo.written)
        except GarrisonError:
            if repo is not None:
                # The transaction rolled back; what was refused or failed is still recorded.
                failures = [r for r in repo.audit if r.outcome != "success"]
                if failures:
                    self.audit.record(failures)
            raise
        if read_only and repo.audit:
            # Reads are audited before the data leaves the server.
            self.audit.record(repo.audit)
        return response

    def _read_as_caller(
        self, request: FhirRequest, authorization: str | None, source: str | None
    ) -> FhirResponse:
        """A GET: the caller is authenticated first (checklist A1: before the format is looked
        at), in the same read transaction that answers, and the read is audited before it leaves."""
        with (
            read_transaction(self.engine) as connection,
            prefetched(connection, self._lookups(request, authorization)),
        ):
            answer = self._answer(connection, request, authorization, source)
        self.audit.record(answer.audit)
        return answer.response()

    async def _read_awaiting(
        self, request: FhirRequest, authorization: str | None, source: str | None
    ) -> FhirResponse:
        """`_read_as_caller` on the event loop (PostgreSQL, a read by id): the lookups and the
        audit are awaited, and the work between them runs here without waiting on the database.
        A read that needs more than the prefetched lookups (a user's account, say) is done again
        in a worker thread; nothing of the first attempt was recorded."""
        on_loop = await self._loop_reads()
        lookups = self._lookups(request, authorization)
        answers = await on_loop.lookups.run(lambda c: prefetch_async(c, lookups))
        try:
            with answering_only(on_loop.connection, answers):
                answer = self._answer(on_loop.connection, request, authorization, source)
        except RoundTripRefused:
            self.reads_redone_in_threads += 1
            self._note_miss(authorization)
            return await run_in_threadpool(self._read_as_caller, request, authorization, source)
        if self._loop_misses:
            self._loop_misses.pop(hash(authorization), None)
        await self.audit.record_async(answer.audit)
        return answer.response()

    def _awaits(self, request: FhirRequest, authorization: str | None) -> bool:
        """Whether a GET is a read whose lookups are all prefetched, as far as is known: a read
        by id (not a vread, whose row is not prefetched), by a caller not sent to threads."""
        if self.router.read_target(request) is None:
            return False
        missed = self._loop_misses.get(hash(authorization))
        if missed is None or missed[0] < _MISSES_BEFORE_THREADS:
            return True
        return time.monotonic() - missed[1] > _THREADS_FOR_SECONDS

    def _note_miss(self, authorization: str | None) -> None:
        if len(self._loop_misses) >= _MAX_REMEMBERED_CALLERS:
            self._loop_misses.clear()  # a bound on memory; forgetting only costs a miss or two
        caller = hash(authorization)
        count = self._loop_misses.get(caller, (0, 0.0))[0]
        self._loop_misses[caller] = (count + 1, time.monotonic())

    async def close(self) -> None:
        """Close what this event loop's reads keep open (at server shutdown)."""
        on_loop: _LoopReads | None = getattr(self._on_loop, "reads", None)
        if on_loop is not None:
            del self._on_loop.reads
            await on_loop.lookups.close()
            on_loop.connection.close()

    async def _loop_reads(self) -> _LoopReads:
        on_loop: _LoopReads | None = getattr(self._on_loop, "reads", None)
        if on_loop is None:
            # Checked out for good, in a thread (a checkout may connect or ping); from then on it
            # only answers prefetched lookups and never waits on the database.
            connection = await run_in_threadpool(self.engine.connect)
            raced: _LoopReads | None = getattr(self._on_loop, "reads", None)
            if raced is not None:  # another read on this loop was first
                connection.close()
                return raced
            connection.execution_options(isolation_level="AUTOCOMMIT")
            refuse_round_trips(connection)
            on_loop = self._on_loop.reads = _LoopReads(AsyncConnections(self.engine), connection)
        return on_loop

    def _answer(
        self, connection: Connection, request: FhirRequest, authorization: str | None, source: str | None
    ) -> _Answer:
        """The caller authenticated, the request answered, and what of it must be audited: every
        record of an answer, only the refusals and failures of an error."""
        try:
            context = context_for_token(connection, self.definitions, self.settings, authorization, source)
        except Unauthorized as refused:
            return _Answer(None, refused, [_refused(request.method, request.path, source, refused)])
        repo = Repository(connection, self.definitions, self.settings, context)
        try:
            _check_wanted_format(dict(request.query).get("_format", ""), request.header("accept") or "")
            return _Answer(self.router.handle(repo, request), None, repo.audit)
        except GarrisonError as error:
            return _Answer(None, error, [r for r in repo.audit if r.outcome != "success"])

    def _lookups(self, request: FhirRequest, authorization: str | None) -> list[Lookup]:
        """PostgreSQL: the token's row, the Consent stamp and, for a read, the resource's row,
        fetched together in one round trip instead of three (see `prefetched`). Fetching the row
        before the caller is known only saves time: nothing is answered from it until the token
        and the caller's rights have been checked as they always are."""
        if not self.prefetches:
            return []
        lookups = caller_lookups(authorization)
        target = self.router.read_target(request)
        if lookups and target is not None:
            lookups.append(current_row_lookup(*target))
        return lookups

    def _caller(self, method: str, path: str, authorization: str | None, source: str | None) -> AccessContext:
        try:
            with read_transaction(self.engine) as connection:
                return context_for_token(connection, self.definitions, self.settings, authorization, source)
        except Unauthorized as error:
            self.audit.record([_refused(method, path, source, error)])
            raise


@dataclass(frozen=True, slots=True)
class _LoopReads:
    """What reads on one event loop keep: asyncio connections for their lookups, and the
    synchronous connection their work runs on (`answering_only`: it never waits on the database)."""

    lookups: AsyncConnections
    connection: Connection


@dataclass(frozen=True, slots=True)
class _Answer:
    """A read's response or error, and the records to audit before either leaves."""

    answered: FhirResponse | None
    error: GarrisonError | None
    audit: list[AuditRecord]

    def response(self) -> FhirResponse:
        if self.error is not None:
            raise self.error
        assert self.answered is not None
        return self.answered


def _refused(method: str, path: str, source: str | None, error: Unauthorized) -> AuditRecord:
    """An unauthenticated attempt (checklist U2): who is unknown, so the record says from where."""
    return AuditRecord(
        action="fhir:unauthenticated",
        outcome="denied",
        actor="anonymous",
        role="anonymous",
        recorded=now(),
        source=source,
        detail={"method": method, "path": path, "reason": error.message},
    )


def _is_public(method: str, path: str) -> bool:
    return path.strip("/") in PUBLIC_PATHS and method.upper() == "GET"


def _is_read_only(request: FhirRequest) -> bool:
    method = request.method.upper()
    if method in ("GET", "HEAD"):
        return True
    if method == "POST":
        last = request.path.rstrip("/").rsplit("/", 1)[-1]
        return last == "_search" or last in _READ_ONLY_OPERATIONS
    return False


def _check_format(request: Request) -> None:
    _check_wanted_format(request.query_params.get("_format", ""), request.headers.get("accept", ""))


def _check_wanted_format(wanted: str, accept: str) -> None:
    if wanted and any(t in wanted for t in _XML_TYPES):
        raise NotSupported("Garrison serves FHIR JSON only; XML is not supported")
    if accept and all(any(x in part for x in _XML_TYPES) for part in accept.split(",")):
        raise NotSupported("Garrison serves FHIR JSON only (Accept asked for XML)")


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw.strip():
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        # POST [base]/[type]/_search carries parameters in the body.
        try:
            return parse_qsl(raw.decode(), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise BadRequest("The form body is not UTF-8") from exc
    if media and media not in _JSON_TYPES:
        if any(x in media for x in _XML_TYPES):
            raise NotSupported("Garrison accepts FHIR JSON only; XML is not supported")
        raise BadRequest(f"Unsupported content type '{media}'; send application/fhir+json")
    try:
        return parse_json(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc


def _render(response: FhirResponse, *, pretty: bool) -> Response:
    body = response.body_bytes()
    if body is not None and pretty:
        body = orjson.dumps(parse_json(body), option=orjson.OPT_INDENT_2, default=json_default)
    headers = dict(response.headers)
    if body is None:
        return Response(status_code=response.status, headers=headers)
    return Response(content=body, status_code=response.status, headers=headers, media_type=FHIR_JSON)
