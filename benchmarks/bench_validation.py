"""Validation throughput on the Synthea bundles: `python benchmarks/bench_validation.py`.

Validates every entry resource of every bundle (already parsed, so only validation is timed)
and prints resources per second on one core. The ingest target needs about 20,000/s here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from garrison.fhir.definitions import definitions_from
from garrison.fhir.validation import Validator
from garrison.settings import Settings

SYNTHEA = Settings().definitions_dir.parents[1] / "synthea"


def load_resources(directory: Path) -> list[dict[str, object]]:
    resources: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        resources.extend(entry["resource"] for entry in bundle.get("entry", []))
    return resources


def main() -> int:
    definitions = definitions_from(Settings().definitions_dir)
    started = time.perf_counter()
    validator = Validator(definitions)
    compile_seconds = time.perf_counter() - started
    resources = load_resources(SYNTHEA)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    best = float("inf")
    invalid = 0
    for _ in range(rounds):
        started = time.perf_counter()
        invalid = sum(1 for resource in resources if validator.validate(resource))
        best = min(best, time.perf_counter() - started)
    print(f"compiled definitions in {compile_seconds * 1000:.0f} ms")
    print(f"{len(resources)} Synthea resources, {invalid} invalid")
    print(f"best of {rounds}: {best:.3f} s = {len(resources) / best:,.0f} resources/s (one core)")
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
