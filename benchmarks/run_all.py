"""Run every HTTP benchmark and the NDJSON import benchmark, then print one summary table against
the targets. For each backend and population size: a fresh database and a `garrison serve
--workers 2` over it, the population loaded through transaction ingest (measured), then read by id,
`Observation?patient&code&_sort=-date` search and `Patient/$everything` against the same server.

    python benchmarks/run_all.py                      # SQLite and PostgreSQL, 100 and 1,000 patients
    python benchmarks/run_all.py --patients 100 --backend sqlite
    python benchmarks/run_all.py --patients 100:1000:10000 --json   # 10,000 patients: about 2 M resources
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import bench_everything
import bench_ingest
import bench_read
import bench_search
from bench_import_ndjson import TARGET_RESOURCES_PER_S as IMPORT_TARGET
from bench_import_ndjson import ImportResult, measure_import, print_import
from common import (
    Databases,
    LatencyResult,
    Server,
    analyze_database,
    backends_of,
    base_parser,
    environment,
    phase,
    print_latency,
    print_table,
    sizes_of,
    verdict,
    write_results,
)
from population import Population


@dataclass
class SummaryRow:
    figure: str
    backend: str
    patients: int
    value: float
    unit: str
    target: float
    higher_is_better: bool

    def cells(self) -> list[str]:
        sign = ">=" if self.higher_is_better else "<="
        return [
            self.figure, self.backend, f"{self.patients:,}", f"{self.value:,.1f} {self.unit}",
            f"{sign} {self.target:,.0f} {self.unit}",
            verdict(self.value, self.target, higher_is_better=self.higher_is_better),
        ]


def _latency_rows(r: LatencyResult, figure: str, targets: dict[str, float]) -> list[SummaryRow]:
    return [
        SummaryRow(f"{figure} {key}", r.backend, r.patients, r.latency.get(f"{key}_ms", float("nan")), "ms",
                   target, higher_is_better=False)
        for key, target in targets.items()
    ]


def server_benchmarks(
    args: argparse.Namespace, databases: Databases, population: Population, backend: str, patients: int
) -> tuple[bench_ingest.IngestResult, list[LatencyResult], list[SummaryRow]]:
    """Ingest, read, search and $everything against one server over a fresh database."""
    latencies: list[LatencyResult] = []
    summary: list[SummaryRow] = []
    title = f"{backend}, {patients:,} patients"
    with Server(databases.new(backend), workers=args.workers) as server:
        with phase(f"{title}: transaction ingest ({args.load_clients} clients)"):
            ingest, loaded = bench_ingest.load_and_measure(
                server, population, backend, patients,
                clients=args.load_clients, workers=args.workers, profile=args.profile,
            )
            print(f"   {ingest.resources_per_s:,.0f} resources/s")
        summary.append(SummaryRow("ingest", backend, patients, ingest.resources_per_s, "res/s",
                                  bench_ingest.TARGET_RESOURCES_PER_S, higher_is_better=True))
        with phase(f"{title}: read by id ({args.clients} clients)"):
            read = bench_read.measure_read(server, loaded, backend, patients, clients=args.clients,
                                           max_requests=args.read_requests, profile=args.profile)
        latencies.append(read)
        summary.append(SummaryRow("read", backend, patients, read.requests_per_s, "req/s",
                                  bench_read.TARGET_RPS, higher_is_better=True))
        summary += _latency_rows(read, "read", {"p99": bench_read.TARGET_P99_MS})
        with phase(f"{title}: Observation search"):
            searches = bench_search.measure_search(server, loaded, backend, patients, clients=args.clients,
                                                   max_requests=args.search_requests, profile=args.profile)
        latencies += searches
        for s in searches:
            summary += _latency_rows(s, s.name, {"p50": bench_search.TARGET_P50_MS,
                                                 "p95": bench_search.TARGET_P95_MS})
        with phase(f"{title}: Patient/$everything (1 client)"):
            whole = bench_everything.measure_everything(server, loaded, backend, patients,
                                                        max_requests=args.everything_requests,
                                                        profile=args.profile)
        latencies.append(whole)
        summary += _latency_rows(whole, "$everything", {"p50": bench_everything.TARGET_P50_MS})
        if args.analyze:
            # The same queries once the planner has statistics (as after routine maintenance).
            analyze_database(server.database_url)
            with phase(f"{title}: after ANALYZE: Observation search and Patient/$everything"):
                searches = bench_search.measure_search(
                    server, loaded, backend, patients, clients=args.clients, max_requests=args.search_requests
                )
                whole = bench_everything.measure_everything(server, loaded, backend, patients,
                                                            max_requests=args.everything_requests)
            for r in [*searches, whole]:
                r.name += " +ANALYZE"
                latencies.append(r)
                targets = ({"p50": bench_everything.TARGET_P50_MS} if r.name.startswith("$everything")
                           else {"p50": bench_search.TARGET_P50_MS, "p95": bench_search.TARGET_P95_MS})
                summary += _latency_rows(r, r.name, targets)
        if server.tokens is not None:
            print(f"   (access tokens obtained from /oauth/token: {server.tokens.fetched})")
    return ingest, latencies, summary


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100:1000", help="population sizes, colon-separated")
    parser.add_argument("--import-patients", default=None,
                        help="population sizes for the NDJSON import (default: as --patients)")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--read-requests", type=int, default=20_000)
    parser.add_argument("--search-requests", type=int, default=2_000)
    parser.add_argument("--everything-requests", type=int, default=200)
    args = parser.parse_args()

    population = Population()
    ingest_rows: list[bench_ingest.IngestResult] = []
    latency_rows: list[LatencyResult] = []
    import_rows: list[ImportResult] = []
    summary: list[SummaryRow] = []
    with Databases() as databases:
        for backend in backends_of(args.backend):
            for patients in sizes_of(args.patients):
                ingest, latencies, rows = server_benchmarks(args, databases, population, backend, patients)
                ingest_rows.append(ingest)
                latency_rows += latencies
                summary += rows
        if not args.skip_import:
            for patients in sizes_of(args.import_patients or args.patients):
                for backend in backends_of(args.backend):
                    result = measure_import(databases, population, backend, patients, profile=args.profile)
                    import_rows.append(result)
                    summary.append(SummaryRow("garrison import (NDJSON)", backend, patients,
                                              result.resources_per_s, "res/s", IMPORT_TARGET,
                                              higher_is_better=True))

    print()
    print(f"Environment: {environment()}")
    print()
    bench_ingest.print_ingest(ingest_rows)
    print()
    print_latency(latency_rows, {
        "read": bench_read.read_target,
        **{r.name: bench_everything.everything_target for r in latency_rows if r.name.startswith("$every")},
        **{r.name: bench_search.search_target for r in latency_rows if r.name.startswith("search")},
    })
    if import_rows:
        print()
        print_import(import_rows)
    print()
    print("Summary against the targets")
    print_table(["figure", "backend", "patients", "measured", "target", "verdict"],
                [r.cells() for r in summary])
    if args.json:
        path = write_results("run_all", [*ingest_rows, *latency_rows, *import_rows, *summary])
        print(f"wrote {path}")
    failures = sum(r.errors for r in ingest_rows) + sum(r.errors for r in latency_rows)
    failures += sum(1 for r in import_rows if r.exit_code or r.reported_resources != r.resources)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
