"""`garrison import` of NDJSON into an empty database (target: >= 15,000 resources/s into PostgreSQL).

Writes the population as NDJSON (ids kept, references as Type/id, bundle order so a referenced
resource comes before its referrers), migrates an empty database, then times the whole
`garrison import` process (start-up included) and reports garrison's own figure too.

    python benchmarks/bench_import_ndjson.py --backend postgresql --patients 1000
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    RESULTS_DIR,
    Databases,
    backends_of,
    base_parser,
    garrison_env,
    garrison_executable,
    phase,
    print_machine_speed,
    print_table,
    sizes_of,
    summarize_collapsed,
    verdict,
    write_results,
)
from population import Population

TARGET_RESOURCES_PER_S = 15_000.0
_REPORTED = re.compile(r"imported ([\d,]+) resources .*\(([\d,]+) resources/s\)")


@dataclass
class ImportResult:
    backend: str
    patients: int
    resources: int
    files: int
    seconds: float  # wall time of the `garrison import` process
    resources_per_s: float  # resources / wall time
    reported_resources: int  # what garrison printed
    reported_per_s: float
    exit_code: int


def measure_import(
    databases: Databases, population: Population, backend: str, patients: int, *, profile: bool = False
) -> ImportResult:
    source = databases.scratch / f"ndjson-{patients}"
    if not source.exists():
        with phase(f"write {patients:,} patients as NDJSON"):
            files, total = population.write_ndjson(source, patients)
    else:
        files = sorted(source.glob("*.ndjson"))
        total = population.resources_for(patients)
    url = databases.new(backend)
    data_dir = databases.scratch / f"data-{backend}-{patients}"
    data_dir.mkdir(exist_ok=True)
    env = garrison_env(url, data_dir)
    subprocess.run([garrison_executable(), "db", "upgrade"], env=env, check=True, capture_output=True)
    command = [garrison_executable(), "import", str(source)]
    profile_out = RESULTS_DIR / f"profile-import-{backend}-{patients}.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profile and Path(py_spy).exists():
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        command = [py_spy, "record", "--format", "raw", "--rate", "200", "--subprocesses",
                   "-o", str(profile_out), "--", *command]
    with phase(f"garrison import {total:,} resources into {backend}"):
        started = time.perf_counter()
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    output = completed.stdout + completed.stderr
    match = _REPORTED.search(output)
    if completed.returncode != 0 or not match:
        print(f"  !! garrison import exited {completed.returncode}:\n{output[-2000:]}", file=sys.stderr)
    if profile and profile_out.exists():
        print(summarize_collapsed(profile_out))
    return ImportResult(
        backend=backend,
        patients=patients,
        resources=total,
        files=len(files),
        seconds=round(elapsed, 2),
        resources_per_s=round(total / elapsed, 1),
        reported_resources=int(match.group(1).replace(",", "")) if match else 0,
        reported_per_s=float(match.group(2).replace(",", "")) if match else 0.0,
        exit_code=completed.returncode,
    )


def print_import(rows: list[ImportResult]) -> None:
    print_table(
        ["backend", "patients", "resources", "imported", "wall s", "resources/s (wall)", "garrison's figure",
         "exit", "target"],
        [
            [r.backend, f"{r.patients:,}", f"{r.resources:,}", f"{r.reported_resources:,}",
             f"{r.seconds:.1f}", f"{r.resources_per_s:,.0f}", f"{r.reported_per_s:,.0f}", str(r.exit_code),
             f">= {TARGET_RESOURCES_PER_S:,.0f}: "
             + verdict(r.resources_per_s, TARGET_RESOURCES_PER_S, higher_is_better=True)]
            for r in rows
        ],
    )
    print_machine_speed()


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="100", help="population sizes, colon-separated")
    args = parser.parse_args()
    population = Population()
    rows: list[ImportResult] = []
    with Databases() as databases:
        for patients in sizes_of(args.patients):
            for backend in backends_of(args.backend):
                rows.append(measure_import(databases, population, backend, patients, profile=args.profile))
    print_import(rows)
    if args.json:
        print(f"wrote {write_results('import', rows)}")
    return 1 if any(r.exit_code or r.reported_resources != r.resources for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
