"""`Patient/[id]/$everything` for loaded Synthea patients, following `next` links until the whole
record is read (target: p50 <= 40 ms). One client: this is the latency of a chart opening.

    python benchmarks/bench_everything.py --backend both --patients 100
"""

from __future__ import annotations

import random
import sys

import orjson

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

TARGET_P50_MS = 40.0


def everything(client: HttpClient, patient_id: str) -> tuple[int, bytes]:
    """Read the whole record; returns the last status and a summary body ('<entries> <pages>')."""
    path: str | None = f"/fhir/Patient/{patient_id}/$everything"
    entries = pages = 0
    while path:
        status, body = client.get(path)
        if status != 200:
            return status, body
        bundle = orjson.loads(body)
        pages += 1
        entries += len(bundle.get("entry", []))
        path = None
        for link in bundle.get("link", []):
            if link.get("relation") == "next":
                url = str(link["url"])
                path = url[url.index("/fhir/"):]
    return 200, f"{entries} {pages}".encode()


def measure_everything(
    server: Server,
    loaded: Loaded,
    backend: str,
    patients: int,
    *,
    clients: int = 1,
    max_requests: int = 200,
    max_seconds: float = 30.0,
    profile: bool = False,
) -> LatencyResult:
    ids = [p.id for p in random.Random(5).choices(loaded.patients, k=max_requests + 20)]
    summaries: list[tuple[int, int]] = []

    def work(client: HttpClient, n: int) -> tuple[int, bytes]:
        status, body = everything(client, ids[n])
        if status == 200:
            entries, pages = body.split()
            summaries.append((int(entries), int(pages)))
        return status, body

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:300]!r}"
        return None if int(body.split()[0]) > 1 else "the record holds only the Patient"

    run_load(server, work, clients=clients, max_requests=20, max_seconds=10, check=check)
    ids = ids[20:]
    summaries.clear()
    with Profiler(server, f"everything-{backend}-{patients}", profile):
        result = run_load(server, work, clients=clients, max_requests=max_requests, max_seconds=max_seconds,
                          check=check)
    row = latency_result("$everything", backend, patients, clients, result)
    if summaries:
        mean_entries = sum(e for e, _ in summaries) / len(summaries)
        print(f"   $everything: {mean_entries:.0f} resources per patient on average, "
              f"up to {max(p for _, p in summaries)} pages")
    return row


def everything_target(r: LatencyResult) -> str:
    met = verdict(r.latency.get("p50_ms", 1e9), TARGET_P50_MS, higher_is_better=False)
    return f"p50 <= {TARGET_P50_MS:.0f} ms: {met}"


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100", help="population sizes, colon-separated")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.set_defaults(clients=1)
    args = parser.parse_args()
    rows = [
        measure_everything(server, loaded, backend, patients, clients=args.clients,
                           max_requests=args.requests, max_seconds=args.seconds, profile=args.profile)
        for backend, patients, server, loaded, _ in populated_servers(args)
    ]
    print_latency(rows, {"$everything": everything_target})
    if args.json:
        print(f"wrote {write_results('everything', rows)}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
