"""Server CPU time of one FHIR read by id, through the real ASGI application, in process.

The HTTP benchmarks share two cores between the server, the load generator and PostgreSQL, and
their figures vary by a quarter from run to run. This one calls the application directly (no
socket, no client), one request at a time, and reports the process's CPU time per request (all
threads: the event loop, the thread pool, the audit group commit). It is the figure to compare
when changing the request path.

    python benchmarks/bench_request_cpu.py --backend both --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

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
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
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


async def measure(backend: str, patients: int, requests: int) -> list[str]:
    with Databases() as databases:
        app, client_id, key = app_in_process(databases, backend, "garrison-cpu-")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
            authorization = await asgi_authorization(client, client_id, key)
            references, _ = await load(client, {"Authorization": authorization}, Population(), patients)
        paths = [f"/fhir/{r}" for r in random.Random(7).choices(references, k=requests + 200)]
        for path in paths[:200]:  # warm-up: caches, pooled connections, first-use code paths
            await call(app, path, authorization)
        cpu, wall = time.process_time(), time.perf_counter()
        for path in paths[200:]:
            await call(app, path, authorization)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        app.state.engine.dispose()
    return [backend, f"{requests:,}", f"{1000 * cpu / requests:.3f}", f"{1000 * wall / requests:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="sqlite", help="sqlite, postgresql or both")
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    rows = [
        asyncio.run(measure(backend, args.patients, args.requests)) for backend in backends_of(args.backend)
    ]
    print_table(["backend", "reads", "server CPU ms/read", "wall ms/read"], rows)


if __name__ == "__main__":
    main()
