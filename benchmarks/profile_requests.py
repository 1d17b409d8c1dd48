"""Where one authenticated request's time goes, in process (no HTTP, no other clients).

A database is loaded with a few Synthea patients through the application itself, a backend client
is registered with `garrison clients add` and a token obtained from /oauth/token with
private_key_jwt (as in every benchmark). Then, for read by id (and, with --search, the search and
$everything of the other benchmarks):

1. wall time per request through the whole Starlette application (httpx's ASGI transport, one
   request at a time: ASGI, middleware, threadpool hop, auth, audit, rendering);
2. cProfile of the synchronous part of the same requests (`FhirApi._read_as_caller`: token
   validation, caller context, repository and audit in one read transaction), called directly in this
   thread so the profiler sees it all (the application runs each in a threadpool thread).
   Time the audit sink's writer thread spends committing shows up as the caller's wait in
   `AuditSink.record`.

    python benchmarks/profile_requests.py                       # SQLite, 2,000 reads
    python benchmarks/profile_requests.py --backend postgresql --search
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from joserfc.jwk import ECKey
from sqlalchemy import Engine, event
from starlette.applications import Starlette

from bench_ingest import _locations
from common import (
    Databases,
    garrison_env,
    percentile,
    print_table,
    register_backend_client,
    token_request_form,
)
from garrison import clock
from garrison.db.engine import make_engine, read_transaction
from garrison.db.migrate import upgrade
from garrison.fhir.authz.break_glass import active_break_glass
from garrison.fhir.authz.consent_rules import consent_rules
from garrison.fhir.authz.guard import Guard
from garrison.fhir.repository import Repository
from garrison.fhir.router import FhirRequest, FhirResponse
from garrison.identity.accounts import get_account
from garrison.oauth.jose import decode_segments
from garrison.oauth.tokens import _verified, validate_access_token
from garrison.settings import Settings
from garrison.web.app import server_app
from garrison.web.fhir_api import FhirApi
from population import Population

ORIGIN = "http://127.0.0.1:8000"  # only a name here: every request goes through ASGITransport
BASE = f"{ORIGIN}/fhir"

# The functions whose inclusive time answers "where does a read go" (matched on name and file).
FOCUS: list[tuple[str, str]] = [
    ("_read_as_caller", "web/fhir_api.py"),
    ("prefetched", "db/engine.py"),
    ("context_for_token", "garrison/callers.py"),
    ("validate_access_token", "oauth/tokens.py"),
    ("_verified", "oauth/tokens.py"),
    ("active_break_glass", "authz/break_glass.py"),
    ("prepare", "fhir/router.py"),
    ("handle", "fhir/router.py"),
    ("read", "fhir/repository.py"),
    ("search", "fhir/repository.py"),
    ("record", "audit/sink.py"),
    ("encode_record", "audit/chain.py"),
    ("__enter__", "contextlib.py"),
    ("__exit__", "contextlib.py"),
    ("execute", "sqlalchemy/engine/base.py"),
    ("wait", "threading.py"),
    ("body_bytes", "fhir/router.py"),
]


def fhir_api_of(app: Any) -> FhirApi:
    for route in app.routes:
        endpoint = getattr(route, "endpoint", None)
        owner = getattr(endpoint, "__self__", None)
        if isinstance(owner, FhirApi):
            return owner
    raise SystemExit("no FhirApi route in the application")


async def load(client: httpx.AsyncClient, headers: dict[str, str], population: Population,
               patients: int, *, first: int = 0) -> tuple[list[str], list[tuple[str, tuple[str, ...]]]]:
    """POST patients first..first+patients-1 as transactions; return every 'Type/id' and
    (patient id, codes)."""
    references: list[str] = []
    loaded: list[tuple[str, tuple[str, ...]]] = []
    for n in range(first, first + patients):
        generated = population.bundle(n)
        reply = await client.post("/fhir", content=generated.body,
                                  headers={**headers, "Content-Type": "application/fhir+json"})
        refs = _locations(reply.content) if reply.status_code == 200 else reply.text
        if not isinstance(refs, list):
            raise SystemExit(f"loading patient {n} failed: {refs[:400]}")
        references += refs
        loaded.append((refs[generated.patient_entry].split("/")[1], generated.observation_codes))
    return references, loaded


def app_in_process(databases: Databases, backend: str, prefix: str) -> tuple[Starlette, str, ECKey]:
    """A migrated database of `backend`, a registered backend client, and the ASGI application
    over it in this process, as a `garrison serve` worker builds it: (app, client id, client key)."""
    url = databases.new(backend)
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=databases.scratch))
    settings = Settings(database_url=url, data_dir=data_dir, base_url=BASE)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
    client_id, key = register_backend_client(garrison_env(url, data_dir, BASE), data_dir)
    return server_app(settings), client_id, key


async def asgi_authorization(client: httpx.AsyncClient, client_id: str, key: ECKey) -> str:
    """`Bearer <token>` from the application's token endpoint (private_key_jwt). One token is
    enough: a run lasts well under its 5 minutes (TokenSource renews them in the HTTP
    benchmarks, but it speaks http.client, not ASGI)."""
    config = (await client.get("/fhir/.well-known/smart-configuration")).json()
    token_url = str(config["token_endpoint"])
    reply = await client.post(token_url.removeprefix(ORIGIN),
                              content=token_request_form(key, client_id, token_url),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    if reply.status_code != 200:
        raise SystemExit(f"token endpoint: {reply.status_code} {reply.text[:300]}")
    return f"Bearer {reply.json()['access_token']}"


async def timed_asgi(client: httpx.AsyncClient, headers: dict[str, str], paths: list[str]) -> list[float]:
    latencies = []
    for path in paths:
        started = time.perf_counter()
        reply = await client.get(path, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
    return latencies


def synchronous_part(api: FhirApi, request: FhirRequest, source: str = "127.0.0.1") -> FhirResponse:
    """What the application runs in a threadpool thread for one GET (`FhirApi._read_as_caller`:
    who is calling and the request itself, in one read transaction, then the audit)."""
    return api._read_as_caller(request, request.header("authorization"), source)


def fhir_request(path: str, authorization: str) -> FhirRequest:
    parts = urlsplit(path)
    return FhirRequest(
        method="GET",
        path=parts.path.removeprefix("/fhir").lstrip("/"),
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        headers={"accept": "application/fhir+json", "authorization": authorization},
        body=None,
    )


class StatementTimer:
    """Wall time of each SQL statement the engine runs (in every thread), grouped by its text."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.samples: dict[str, tuple[str, Any]] = {}  # text -> (statement, parameters) as run
        self._started = threading.local()

    def __enter__(self) -> StatementTimer:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, *_args: Any) -> None:
        self._started.at = time.perf_counter()

    def _after(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        key = " ".join(statement.split())
        entry = self.totals[key]
        entry[0] += 1
        entry[1] += time.perf_counter() - self._started.at
        self.samples[key] = (statement, parameters)

    def explain_slowest(self) -> str:
        """The slowest statement in full with its query plan (EXPLAIN QUERY PLAN on SQLite,
        EXPLAIN ANALYZE on PostgreSQL) for its last parameters."""
        if not self.totals:
            return ""
        key = max(self.totals, key=lambda k: self.totals[k][1])
        statement, parameters = self.samples[key]
        postgres = self.engine.dialect.name == "postgresql"
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
        with self.engine.connect() as connection:
            rows = connection.exec_driver_sql(prefix + statement, parameters).all()
        plan = [str(row[0]) if postgres else f"{'  ' * int(row[1] > 0)}{row[-1]}" for row in rows]
        return f"{statement}\nparameters: {parameters!r}\nplan:\n  " + "\n  ".join(plan)

    def report(self, count: int, top: int = 6) -> str:
        lines = [f"  {'ms/request':>10}  {'calls/req':>9}  {'ms/call':>7}  statement (slowest {top})"]
        ranked = sorted(self.totals.items(), key=lambda item: -item[1][1])[:top]
        for text, (calls, seconds) in ranked:
            lines.append(f"  {1000 * seconds / count:10.3f}  {calls / count:9.1f}  "
                         f"{1000 * seconds / calls:7.3f}  {text[:600]}")
        return "\n".join(lines)


def profile_direct(
    api: FhirApi, paths: list[str], authorization: str, top: int, *, explain: bool = False
) -> tuple[float, str, str]:
    """cProfile `FhirApi._read_as_caller` over the paths; (ms per request, focus table, top functions),
    after one untimed pass that times each SQL statement."""
    requests = [fhir_request(p, authorization) for p in paths]
    with StatementTimer(api.engine) as timer:
        for request in requests:
            synchronous_part(api, request)
    print(f"\n--- SQL statements ({len(requests)} requests, audit writer thread included) ---")
    print(timer.report(len(requests)))
    if explain:
        print(timer.explain_slowest())
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for request in requests:
        response = synchronous_part(api, request)
        response.body_bytes()
    profiler.disable()
    per_request = (time.perf_counter() - started) * 1000 / len(requests)
    stats = pstats.Stats(profiler)
    return per_request, focus_table(stats, len(requests)), top_functions(stats, top)


def components(api: FhirApi, authorization: str, path: str, count: int) -> list[list[str]]:
    """Each step of a read timed on its own (no profiler), `count` times: what a cProfile share
    means in milliseconds. Steps inside one open read transaction leave its BEGIN/COMMIT out."""
    token = authorization.removeprefix("Bearer ")
    settings, engine, source = api.settings, api.engine, "127.0.0.1"
    request = fhir_request(path, authorization)
    context = api._caller(request.method, request.path, authorization, source)
    resource_type, resource_id = request.path.split("/")[:2]
    prepared = api.router.prepare(api.definitions, request)
    with read_transaction(engine) as connection:
        repo = Repository(connection, api.definitions, settings, context)
        api.router.handle(repo, prepared)
        records = list(repo.audit)

    def timed(step: Callable[[], object]) -> str:
        step()
        started = time.perf_counter()
        for _ in range(count):
            step()
        return f"{(time.perf_counter() - started) * 1000 / count:.3f}"

    def empty_transaction() -> None:
        with read_transaction(engine):
            pass

    rows = [["read_transaction with nothing in it (BEGIN, COMMIT, pool)", timed(empty_transaction)]]
    with read_transaction(engine) as connection:
        rows += [
            ["validate_access_token", timed(lambda: validate_access_token(connection, token, settings))],
            ["  of which _verified (key row + signature check)",
             timed(lambda: _verified(connection, token, settings, honour_grace=True))],
            ["  of which decode_segments (base64url + JSON of the header and claims)",
             timed(lambda: decode_segments(token))],
            ["get_account (user tokens only)", timed(lambda: get_account(connection, "no-such-account"))],
            ["active_break_glass (user tokens only)",
             timed(lambda: active_break_glass(connection, "Practitioner/x", clock.now()))],
            ["consent_rules (Consent query, per Repository)",
             timed(lambda: consent_rules(connection, context))],
            ["Guard(...) construction", timed(lambda: Guard(api.definitions, settings, context, connection))],
            ["Repository(...).read (guard, consents, the row)",
             timed(lambda: Repository(connection, api.definitions, settings, context).read(
                 resource_type, resource_id))],
        ]
    rows += [
        ["FhirApi._caller (own transaction + token + context)",
         timed(lambda: api._caller(request.method, request.path, authorization, source))],
        ["AuditSink.record of one read, alone (a commit each)", timed(lambda: api.audit.record(records))],
        ["FhirApi._execute (transaction, repository, audit)", timed(lambda: api._execute(request, context))],
        ["both: the whole synchronous part of a read", timed(lambda: synchronous_part(api, request, source))],
    ]
    return rows


def focus_table(stats: pstats.Stats, count: int) -> str:
    table: dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]] = stats.stats  # type: ignore[attr-defined]
    lines = [f"  {'ms/request':>10}  {'calls/req':>9}  function"]
    for name, where in FOCUS:
        matches = [(k, v) for k, v in table.items() if k[2] == name and where in k[0]]
        if not matches:
            continue
        calls = sum(v[1] for _, v in matches)
        cumulative = sum(v[3] for _, v in matches)
        lines.append(f"  {1000 * cumulative / count:10.3f}  {calls / count:9.1f}  {name} ({where})")
    return "\n".join(lines)


def top_functions(stats: pstats.Stats, top: int) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(top)
    out.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(top)
    # Shorten the standard library's paths for reading.
    return "\n".join(line.replace(str(Path(shutil.__file__).parent), "<stdlib>")
                     for line in out.getvalue().splitlines() if line.strip())


async def run(args: argparse.Namespace) -> None:
    population = Population()
    with Databases() as databases:
        app, client_id, key = app_in_process(databases, args.backend, "garrison-profile-")
        api = fhir_api_of(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            authorization = await asgi_authorization(client, client_id, key)
            headers = {"Authorization": authorization, "Accept": "application/fhir+json"}
            started = time.perf_counter()
            references, loaded = await load(client, headers, population, args.patients)
            print(f"loaded {len(references):,} resources of {args.patients} patients into {args.backend} "
                  f"in {time.perf_counter() - started:.1f} s")
            rng = random.Random(7)
            kinds: list[tuple[str, list[str]]] = [
                ("read", [f"/fhir/{r}" for r in rng.choices(references, k=args.reads)]),
            ]
            if args.search:
                queries = [f"/fhir/Observation?patient={pid}&code={quote(code, safe='')}&_sort=-date"
                           for pid, codes in loaded for code in codes[:3]]
                kinds.append(("search", rng.choices(queries, k=args.searches)))
                kinds.append(("$everything (first page)",
                              [f"/fhir/Patient/{pid}/$everything" for pid, _ in
                               rng.choices(loaded, k=max(20, args.searches // 10))]))
            print(f"\n=== read, step by step ({args.reads:,} times each, no profiler) ===")
            print_table(["step", "ms"], components(api, authorization, kinds[0][1][0], args.reads))
            rows = []
            for name, paths in kinds:
                await timed_asgi(client, headers, paths[:50])  # warm
                asgi = await timed_asgi(client, headers, paths)
                print(f"\n=== {name} ===")
                direct, focus, top = profile_direct(api, paths, authorization, args.top,
                                                    explain=args.explain)
                rows.append([name, f"{len(paths):,}", f"{percentile(asgi, 50):.2f}",
                             f"{sum(asgi) / len(asgi):.2f}", f"{direct:.2f}"])
                print("--- cProfile of FhirApi._read_as_caller, inclusive time per request ---")
                print(focus)
                if args.verbose:
                    print(top)
        api.audit.close()  # what the application's lifespan would do at shutdown
    print()
    print_table(["request", "count", "ASGI p50 ms", "ASGI mean ms", "_read_as_caller under cProfile ms"],
                rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--search", action="store_true", help="also search and $everything")
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--top", type=int, default=30, help="functions listed with --verbose")
    parser.add_argument("--verbose", action="store_true", help="also print pstats' top functions")
    parser.add_argument("--explain", action="store_true", help="print the slowest statement and its plan")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
