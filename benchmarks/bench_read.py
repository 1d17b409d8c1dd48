"""Read by id: GET [base]/[type]/[id] of random loaded resources from concurrent clients
(targets with 4 clients: >= 2,000 requests/s and p99 <= 15 ms).

    python benchmarks/bench_read.py --backend both --patients 100
"""

from __future__ import annotations

import random
import sys

from bench_ingest import Loaded, populated_servers
from common import (
    HttpClient,
    LatencyResult,
    Profiler,
    Server,
    base_parser,
    latency_result,
    print_latency,
    run_load,
    verdict,
    write_results,
)

TARGET_RPS = 2000.0
TARGET_P99_MS = 15.0


def measure_read(
    server: Server,
    loaded: Loaded,
    backend: str,
    patients: int,
    *,
    clients: int,
    max_requests: int = 20_000,
    max_seconds: float = 20.0,
    profile: bool = False,
) -> LatencyResult:
    rng = random.Random(7)
    paths = [f"/fhir/{ref}" for ref in rng.choices(loaded.references, k=max_requests + 500)]

    def work(client: HttpClient, n: int) -> tuple[int, bytes]:
        return client.get(paths[n])

    # Warm-up (untimed): connections, caches, first-use code paths in every worker.
    run_load(server, work, clients=clients, max_requests=500, max_seconds=10)
    paths = paths[500:]
    with Profiler(server, f"read-{backend}-{patients}", profile):
        result = run_load(server, work, clients=clients, max_requests=max_requests, max_seconds=max_seconds)
    return latency_result("read", backend, patients, clients, result)


def read_target(r: LatencyResult) -> str:
    ok = verdict(r.requests_per_s, TARGET_RPS, higher_is_better=True) == "ok" and verdict(
        r.latency.get("p99_ms", 1e9), TARGET_P99_MS, higher_is_better=False) == "ok"
    return f">= {TARGET_RPS:,.0f}/s, p99 <= {TARGET_P99_MS:.0f} ms: {'ok' if ok else 'MISSED'}"


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100", help="population sizes, colon-separated (e.g. 100:1000)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = [
        measure_read(server, loaded, backend, patients, clients=args.clients, max_requests=args.requests,
                     max_seconds=args.seconds, profile=args.profile)
        for backend, patients, server, loaded, _ in populated_servers(args)
    ]
    print_latency(rows, {"read": read_target})
    if args.json:
        print(f"wrote {write_results('read', rows)}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
