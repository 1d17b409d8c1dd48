"""Transaction ingest: POST re-identified Synthea transaction Bundles to [base] from concurrent
clients and count resources per second (target: >= 2,000 resources/s with 4 clients).

    python benchmarks/bench_ingest.py --backend both --patients 100:1000

The same loader fills the databases of the read, search and $everything benchmarks; it keeps the
server-assigned id of every created resource (from each entry's response.location).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from common import (
    Databases,
    HttpClient,
    LoadResult,
    Profiler,
    Server,
    analyze_database,
    backends_of,
    base_parser,
    garrison_env,
    garrison_executable,
    latency_summary,
    phase,
    print_machine_speed,
    print_table,
    report_errors,
    run_load,
    sizes_of,
    verdict,
    write_results,
)
from population import Population

TARGET_RESOURCES_PER_S = 2000.0


@dataclass(frozen=True)
class LoadedPatient:
    id: str  # server-assigned Patient id
    observation_codes: tuple[str, ...]  # "system|code" present for this patient, most frequent first


@dataclass
class Loaded:
    """What the server holds after a load: patients and every created resource as 'Type/id'."""

    patients: list[LoadedPatient] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    backend: str
    patients: int
    clients: int
    workers: int
    resources: int
    bundles: int
    seconds: float
    resources_per_s: float
    bundle_latency: dict[str, float]
    errors: int
    server_rss_mb: float


def _locations(body: bytes) -> list[str] | str:
    """The 'Type/id' of each entry of a transaction-response, or a description of what failed."""
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON: {body[:200]!r}"
    found: list[str] = []
    for entry in reply.get("entry", []):
        response = entry.get("response", {})
        if not str(response.get("status", "")).startswith("201"):
            return f"entry status {response.get('status')}: {str(entry)[:300]}"
        location = str(response.get("location", ""))
        parts = location.split("/_history/", maxsplit=1)[0].split("/")
        found.append("/".join(parts[-2:]))
    return found


def ingest(
    server: Server,
    population: Population,
    patients: int,
    *,
    clients: int,
    first: int = 0,
    profile_name: str | None = None,
    max_seconds: float = 4 * 3600,
) -> tuple[LoadResult, Loaded, int]:
    """POST patients first..first+patients-1 as transactions from `clients` threads.
    Returns the load figures, what was created and the number of resources sent."""
    loaded = Loaded()
    lock = threading.Lock()
    sent = 0
    by_number: dict[int, LoadedPatient] = {}

    def work(client: HttpClient, n: int) -> tuple[int, bytes]:
        nonlocal sent
        generated = population.bundle(first + n)
        status, body = client.post("/fhir", generated.body)
        if status == 200:
            refs = _locations(body)
            if isinstance(refs, list):
                with lock:
                    sent += generated.resources
                    loaded.references.extend(refs)
                    by_number[n] = LoadedPatient(
                        id=refs[generated.patient_entry].split("/")[1],
                        observation_codes=generated.observation_codes,
                    )
            else:
                return 599, refs.encode()
        return status, body

    def check(status: int, body: bytes) -> str | None:
        return None if status == 200 else f"HTTP {status}: {body[:300]!r}"

    with Profiler(server, profile_name or "ingest", profile_name is not None):
        result = run_load(
            server, work, clients=clients, max_requests=patients, max_seconds=max_seconds, check=check
        )
    loaded.patients = [by_number[n] for n in sorted(by_number)]
    return result, loaded, sent


def load_and_measure(
    server: Server,
    population: Population,
    backend: str,
    patients: int,
    *,
    clients: int,
    workers: int,
    profile: bool = False,
) -> tuple[IngestResult, Loaded]:
    """Warm every worker with a couple of bundles (untimed: first-use compilation), then time the rest."""
    warm = min(patients, 2 * workers)
    warm_result, warm_loaded, _ = ingest(server, population, warm, clients=clients)
    report_errors("ingest warm-up", warm_result)
    result, loaded, sent = ingest(
        server,
        population,
        patients - warm,
        clients=clients,
        first=warm,
        profile_name=f"ingest-{backend}-{patients}" if profile else None,
    )
    report_errors("ingest", result)
    loaded.patients = warm_loaded.patients + loaded.patients
    loaded.references = warm_loaded.references + loaded.references
    figures = IngestResult(
        backend=backend,
        patients=patients,
        clients=clients,
        workers=workers,
        resources=sent,
        bundles=result.requests,
        seconds=round(result.elapsed_s, 2),
        resources_per_s=round(sent / result.elapsed_s, 1) if result.elapsed_s else 0.0,
        bundle_latency=latency_summary(result.latencies_ms),
        errors=result.errors,
        server_rss_mb=round(server.rss_mb(), 1),
    )
    return figures, loaded


def print_ingest(rows: list[IngestResult]) -> None:
    print_table(
        ["backend", "patients", "resources", "seconds", "resources/s", "bundle p50 ms", "errors", "target"],
        [
            [
                r.backend,
                f"{r.patients:,}",
                f"{r.resources:,}",
                f"{r.seconds:.1f}",
                f"{r.resources_per_s:,.0f}",
                f"{r.bundle_latency.get('p50_ms', float('nan')):.0f}",
                str(r.errors),
                f">= {TARGET_RESOURCES_PER_S:,.0f}: "
                + verdict(r.resources_per_s, TARGET_RESOURCES_PER_S, higher_is_better=True),
            ]
            for r in rows
        ],
    )
    print_machine_speed()


def import_population(
    databases: Databases, url: str, population: Population, backend: str, patients: int
) -> tuple[IngestResult, Loaded]:
    """`garrison import` of the population as NDJSON (ids kept) into the database at `url`."""
    source = databases.scratch / f"ndjson-{patients}"
    if not source.exists():
        population.write_ndjson(source, patients)
    data_dir = databases.scratch / f"import-{backend}-{patients}"
    data_dir.mkdir(exist_ok=True)
    env = garrison_env(url, data_dir)
    subprocess.run([garrison_executable(), "db", "upgrade"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    command = [garrison_executable(), "import", str(source)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"garrison import failed:\n{(done.stdout + done.stderr)[-2000:]}")
    loaded = Loaded()
    for n in range(patients):
        text, _, patient_id = population.ndjson(n)
        for line in text.splitlines():
            item = orjson.loads(line)
            loaded.references.append(f"{item['resourceType']}/{item['id']}")
        codes = population.sources[n % len(population.sources)].observation_codes
        loaded.patients.append(LoadedPatient(id=patient_id, observation_codes=codes))
    resources = len(loaded.references)
    return IngestResult(
        backend=backend, patients=patients, clients=0, workers=0, resources=resources, bundles=0,
        seconds=round(elapsed, 2), resources_per_s=round(resources / elapsed, 1), bundle_latency={},
        errors=0, server_rss_mb=0.0,
    ), loaded


def populated_servers(
    args: argparse.Namespace, population: Population | None = None
) -> Iterator[tuple[str, int, Server, Loaded, IngestResult]]:
    """For each backend and population size of the command line: a fresh database, a server over it
    and the population loaded (through the ingest path). Yields while the server runs."""
    population = population or Population()
    with Databases() as databases:
        for backend in backends_of(args.backend):
            for patients in sizes_of(args.patients):
                if getattr(args, "load", "api") == "ndjson":
                    url = databases.new(backend)
                    with phase(f"import {patients:,} patients into {backend} (NDJSON)"):
                        figures, loaded = import_population(databases, url, population, backend, patients)
                        print(f"   {figures.resources:,} resources, {figures.resources_per_s:,.0f}/s")
                    with Server(url, workers=args.workers) as server:
                        yield backend, patients, server, loaded, figures
                    continue
                with Server(databases.new(backend), workers=args.workers) as server:
                    with phase(f"load {patients:,} patients into {backend}"):
                        figures, loaded = load_and_measure(
                            server, population, backend, patients,
                            clients=args.load_clients, workers=args.workers,
                        )
                        print(f"   {figures.resources:,} resources, {figures.resources_per_s:,.0f}/s")
                    if getattr(args, "analyze", False):
                        analyze_database(server.database_url)
                    yield backend, patients, server, loaded, figures


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100", help="population sizes, colon-separated (e.g. 100:1000)")
    args = parser.parse_args()
    population = Population()
    rows: list[IngestResult] = []
    with Databases() as databases:
        for backend in backends_of(args.backend):
            for patients in sizes_of(args.patients):
                with (
                    phase(f"ingest {patients:,} patients into {backend}"),
                    Server(databases.new(backend), workers=args.workers) as server,
                ):
                    started = time.perf_counter()
                    figures, _ = load_and_measure(
                        server,
                        population,
                        backend,
                        patients,
                        clients=args.clients,
                        workers=args.workers,
                        profile=args.profile,
                    )
                    rows.append(figures)
                    print(f"   {figures.resources:,} resources in {time.perf_counter() - started:.1f} s")
    print_ingest(rows)
    if args.json:
        print(f"wrote {write_results('ingest', rows)}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
