"""The HTTP floor: what uvicorn and Starlette alone answer on this machine, with the same load
generator and settings as the FHIR benchmarks, for a route that returns a stored Synthea Patient's
JSON without touching a database, token or audit. Read by id cannot go faster than this.

Two routes: answered on the event loop (as Garrison answers a read by id from SQLite), and through
a worker thread (`run_in_threadpool`, as every PostgreSQL request is answered, since a driver call
would stall the event loop).

    python benchmarks/bench_http_floor.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench_read import read_target
from common import (
    HttpClient,
    LatencyResult,
    TokenSource,
    free_port,
    latency_result,
    print_latency,
    run_load,
)
from population import SYNTHEA_DIR

FHIR_JSON = "application/fhir+json"


def _patient_json() -> bytes:
    for path in sorted(SYNTHEA_DIR.glob("*.json")):
        for entry in orjson.loads(path.read_bytes()).get("entry", ()):
            if entry.get("resource", {}).get("resourceType") == "Patient":
                return orjson.dumps(entry["resource"])
    raise SystemExit(f"no Synthea Patient under {SYNTHEA_DIR}")


def floor_app() -> Starlette:
    """The application each uvicorn worker makes (`--factory`)."""
    body = _patient_json()

    def answer() -> Response:
        return Response(body, media_type=FHIR_JSON)

    async def on_loop(_request: Request) -> Response:
        return answer()

    async def in_thread(_request: Request) -> Response:
        return await run_in_threadpool(answer)

    return Starlette(routes=[Route("/loop/{path:path}", on_loop), Route("/thread/{path:path}", in_thread)])


@dataclass
class FloorServer:
    """uvicorn serving `floor_app` with `garrison serve`'s settings (httptools, uvloop, 2 workers)."""

    workers: int = 2

    def __post_init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tokens: TokenSource | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench_http_floor:floor_app",
             "--app-dir", str(Path(__file__).parent), "--host", self.host, "--port", str(self.port),
             "--workers", str(self.workers), "--log-level", "warning", "--no-access-log",
             "--no-proxy-headers"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client = HttpClient(self.host, self.port, timeout=5)
                client.get("/loop/Patient/x")
                client.close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("the floor server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    server = FloorServer(args.workers)
    rows: list[LatencyResult] = []
    try:
        for route in ("loop", "thread"):
            path = f"/{route}/Patient/x"

            def work(client: HttpClient, _n: int, path: str = path) -> tuple[int, bytes]:
                return client.get(path)

            run_load(server, work, clients=args.clients, max_requests=500, max_seconds=10)  # warm-up
            result = run_load(server, work, clients=args.clients, max_requests=args.requests,
                              max_seconds=args.seconds)
            rows.append(latency_result(f"floor {route}", "none", 0, args.clients, result))
    finally:
        server.stop()
    print_latency(rows, {row.name: read_target for row in rows})  # with the machine's speed
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
