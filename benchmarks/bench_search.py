"""Search: `Observation?patient=X&code=Y&_sort=-date` for loaded patients and codes they have
(targets: p50 <= 5 ms, p95 <= 15 ms at 1,000 patients). Runs with one client (latency alone) and
with --clients concurrent clients (latency under load).

    python benchmarks/bench_search.py --backend both --patients 100:1000
"""

from __future__ import annotations

import random
import sys
from urllib.parse import quote

from bench_ingest import Loaded, populated_servers
from common import (
    HttpClient,
    LatencyResult,
    Profiler,
    Server,
    Work,
    base_parser,
    latency_result,
    print_latency,
    run_load,
    verdict,
    write_results,
)

TARGET_P50_MS = 5.0
TARGET_P95_MS = 15.0
CODES_PER_PATIENT = 3


def search_paths(loaded: Loaded, count: int, seed: int = 11) -> list[str]:
    queries = [
        f"/fhir/Observation?patient={patient.id}&code={quote(code, safe='')}&_sort=-date"
        for patient in loaded.patients
        for code in patient.observation_codes[:CODES_PER_PATIENT]
    ]
    if not queries:
        raise SystemExit("no loaded patient has Observations")
    return random.Random(seed).choices(queries, k=count)


def _has_matches(status: int, body: bytes) -> str | None:
    # Each query names a code the patient has, so an empty searchset is a wrong answer.
    if status != 200:
        return f"HTTP {status}: {body[:300]!r}"
    if b'"entry"' not in body:
        return f"no matches: {body[:300]!r}"
    return None


def measure_search(
    server: Server,
    loaded: Loaded,
    backend: str,
    patients: int,
    *,
    clients: int,
    max_requests: int = 2_000,
    max_seconds: float = 20.0,
    profile: bool = False,
) -> list[LatencyResult]:
    paths = search_paths(loaded, 200 + 2 * max_requests)

    def work_from(offset: int) -> Work:
        def work(client: HttpClient, n: int) -> tuple[int, bytes]:
            return client.get(paths[offset + n])

        return work

    run_load(server, work_from(0), clients=clients, max_requests=200, max_seconds=10, check=_has_matches)
    rows = []
    for number, concurrency in enumerate(sorted({1, clients})):
        offset = 200 + number * max_requests
        with Profiler(server, f"search-{backend}-{patients}-c{concurrency}", profile):
            result = run_load(server, work_from(offset), clients=concurrency,
                              max_requests=max_requests, max_seconds=max_seconds, check=_has_matches)
        rows.append(latency_result(f"search c={concurrency}", backend, patients, concurrency, result))
    return rows


def search_target(r: LatencyResult) -> str:
    ok = verdict(r.latency.get("p50_ms", 1e9), TARGET_P50_MS, higher_is_better=False) == "ok" and verdict(
        r.latency.get("p95_ms", 1e9), TARGET_P95_MS, higher_is_better=False) == "ok"
    return f"p50 <= {TARGET_P50_MS:.0f}, p95 <= {TARGET_P95_MS:.0f} ms: {'ok' if ok else 'MISSED'}"


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100:1000", help="population sizes, colon-separated")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows: list[LatencyResult] = []
    for backend, patients, server, loaded, _ in populated_servers(args):
        rows += measure_search(server, loaded, backend, patients, clients=args.clients,
                               max_requests=args.requests, max_seconds=args.seconds, profile=args.profile)
    print_latency(rows, {r.name: search_target for r in rows})
    if args.json:
        print(f"wrote {write_results('search', rows)}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
