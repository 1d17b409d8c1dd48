"""`garrison generate` throughput: patients/s and resources/s, into a fresh database per run.

Runs the generator in this process exactly as the command does (facility network first, NDJSON
written to a temporary directory, `load_ndjson` with one loader process per CPU, ground truth
stored), and reports the whole run and its two phases separately: generation (people, records,
NDJSON) and the bulk load (validation, indexing, storage). Target: 10,000 patients in a few
minutes, i.e. at least 10,000 / 300 s = 33 patients/s.

    python benchmarks/bench_generate.py --patients 1000:10000 --backend both --json
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import date

from common import (
    Databases,
    backends_of,
    base_parser,
    phase,
    print_table,
    sizes_of,
    verdict,
    write_results,
)
from garrison.db.engine import make_engine
from garrison.db.migrate import upgrade
from garrison.fhir.definitions import definitions_from
from garrison.population.generate import PopulationOptions, generate_population
from garrison.settings import Settings

TARGET_PATIENTS_PER_S = 10_000 / 300
AS_OF = date(2026, 11, 26)  # fixed, so every run generates the same population


@dataclass
class GenerateResult:
    backend: str
    patients: int
    resources: int
    duplicates: int
    errors: int
    seconds: float  # the whole run: network, generation, load, ground truth
    seconds_generate: float
    seconds_load: float
    patients_per_s: float
    resources_per_s: float
    generate_patients_per_s: float
    load_resources_per_s: float


def measure(
    databases: Databases, backend: str, patients: int, seed: int, workers: int | None
) -> GenerateResult:
    url = databases.new(backend)
    settings = Settings(database_url=url)
    engine = make_engine(url)
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    options = PopulationOptions(patients=patients, seed=seed, as_of=AS_OF, duplicates_rate=0.02)
    with phase(f"generate {patients:,} patients into {backend}"):
        started = time.perf_counter()
        summary = generate_population(engine, definitions, settings, options, workers=workers)
        elapsed = time.perf_counter() - started
    engine.dispose()
    stats = summary.stats
    if summary.errors:
        refused = f"{len(summary.errors)} resources were refused, e.g. {summary.errors[:3]}"
        print(f"  !! {refused}", file=sys.stderr)
    return GenerateResult(
        backend=backend,
        patients=stats.people,
        resources=summary.loaded,
        duplicates=stats.duplicates,
        errors=len(summary.errors),
        seconds=round(elapsed, 2),
        seconds_generate=round(summary.seconds_generate, 2),
        seconds_load=round(summary.seconds_load, 2),
        patients_per_s=round(stats.people / elapsed, 1),
        resources_per_s=round(summary.loaded / elapsed, 1),
        generate_patients_per_s=round(stats.people / summary.seconds_generate, 1),
        load_resources_per_s=round(summary.loaded / summary.seconds_load, 1),
    )


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="1000", help="population sizes, colon-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loaders", type=int, default=None, help="loader processes (default: one per CPU)")
    args = parser.parse_args()
    rows: list[GenerateResult] = []
    with Databases() as databases:
        for patients in sizes_of(args.patients):
            for backend in backends_of(args.backend):
                rows.append(measure(databases, backend, patients, args.seed, args.loaders))
    print_table(
        ["backend", "patients", "resources", "dups", "total s", "patients/s", "resources/s", "generate s",
         "gen patients/s", "load s", "load resources/s", "target"],
        [
            [r.backend, f"{r.patients:,}", f"{r.resources:,}", str(r.duplicates), f"{r.seconds:.1f}",
             f"{r.patients_per_s:,.1f}", f"{r.resources_per_s:,.0f}", f"{r.seconds_generate:.1f}",
             f"{r.generate_patients_per_s:,.0f}", f"{r.seconds_load:.1f}", f"{r.load_resources_per_s:,.0f}",
             f">= {TARGET_PATIENTS_PER_S:.0f} patients/s: "
             + verdict(r.patients_per_s, TARGET_PATIENTS_PER_S, higher_is_better=True)]
            for r in rows
        ],
    )  # fmt: skip
    if args.json:
        print(f"wrote {write_results('generate', rows)}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
