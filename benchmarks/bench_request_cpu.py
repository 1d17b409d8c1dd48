"""Server CPU time of one FHIR read by id (or, with --search, one search of the search benchmark's
shape, `Observation?patient=X&code=Y&_sort=-date`; with --ingest, one resource of the ingest
benchmark's transaction Bundles), through the real ASGI application, in process.

The HTTP benchmarks share two cores between the server, the load generator and PostgreSQL, and
their figures vary by a quarter from run to run. This one calls the application directly (no
socket, no client), one request at a time, and reports the process's CPU time per request (all
threads: the event loop, the thread pool, the audit group commit). It is the figure to compare
when changing the request path.

    python benchmarks/bench_request_cpu.py --backend both --requests 3000
    python benchmarks/bench_request_cpu.py --backend both --search --patients 20
    python benchmarks/bench_request_cpu.py --backend both --ingest --patients 40
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from common import (
    Databases,
    backends_of,
    print_table,
)
from population import Population
from profile_requests import ORIGIN, app_in_process, asgi_authorization, load


async def call(app: Any, path: str, authorization: str) -> None:
    """One GET through the ASGI application, as uvicorn would deliver it."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", authorization.encode()),
                    (b"accept", b"application/fhir+json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"GET {path} answered {sent[0]['status']}")


@asynccontextmanager
async def application(backend: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    """The ASGI application over a fresh database of `backend`, an in-process client of it and a
    backend client's `Bearer` authorization."""
    with Databases() as databases:
        app, client_id, key = app_in_process(databases, backend, "garrison-cpu-")
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
                yield app, client, await asgi_authorization(client, client_id, key)
        finally:
            app.state.engine.dispose()


async def measure_ingest(backend: str, patients: int) -> list[str]:
    """CPU and wall time per resource of POSTing `patients` transaction Bundles, one at a time,
    after two untimed ones (first-use compilation)."""
    population = Population()
    async with application(backend) as (_app, client, authorization):
        await load(client, {"Authorization": authorization}, population, 2)
        resources = sum(population.bundle(n).resources for n in range(2, patients + 2))
        cpu, wall = time.process_time(), time.perf_counter()
        await load(client, {"Authorization": authorization}, population, patients, first=2)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return [backend, f"{resources:,}", f"{1e6 * cpu / resources:.0f}", f"{1e6 * wall / resources:.0f}"]


async def measure(backend: str, patients: int, requests: int, *, search: bool = False) -> list[str]:
    async with application(backend) as (app, client, authorization):
        references, loaded = await load(client, {"Authorization": authorization}, Population(), patients)
        if search:  # as bench_search.py: three codes each patient has
            candidates = [
                f"/fhir/Observation?patient={patient}&code={quote(code, safe='')}&_sort=-date"
                for patient, codes in loaded
                for code in codes[:3]
            ]
        else:
            candidates = [f"/fhir/{r}" for r in references]
        paths = random.Random(7).choices(candidates, k=requests + 200)
        for path in paths[:200]:  # warm-up: caches, pooled connections, first-use code paths
            await call(app, path, authorization)
        cpu, wall = time.process_time(), time.perf_counter()
        for path in paths[200:]:
            await call(app, path, authorization)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return [backend, f"{requests:,}", f"{1000 * cpu / requests:.3f}", f"{1000 * wall / requests:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="sqlite", help="sqlite, postgresql or both")
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--search", action="store_true", help="searches instead of reads")
    parser.add_argument("--ingest", action="store_true", help="transaction Bundles instead of reads")
    args = parser.parse_args()
    if args.ingest:
        figures = [asyncio.run(measure_ingest(b, args.patients)) for b in backends_of(args.backend)]
        print_table(["backend", "resources", "server CPU us/resource", "wall us/resource"], figures)
        return
    rows = [
        asyncio.run(measure(backend, args.patients, args.requests, search=args.search))
        for backend in backends_of(args.backend)
    ]
    kind, count = ("search", "searches") if args.search else ("read", "reads")
    print_table(["backend", count, f"server CPU ms/{kind}", f"wall ms/{kind}"], rows)


if __name__ == "__main__":
    main()
