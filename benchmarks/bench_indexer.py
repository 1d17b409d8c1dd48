"""Search index extraction speed on the Synthea transaction bundles.

Indexes every entry resource of ../shared/testdata/synthea on one core and prints
resources/s, rows/resource, how many expressions run on the fast path vs fhirpathpy, and
the evaluation failures per parameter.

    python benchmarks/bench_indexer.py [--repeat N] [--fallback]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import orjson

from garrison.fhir.definitions import definitions_from
from garrison.fhir.search.indexer import Indexer
from garrison.settings import Settings


def synthea_resources(settings: Settings) -> list[dict[str, Any]]:
    directory = settings.definitions_dir.parents[1] / "synthea"
    resources: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        resources.extend(entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry)
    return resources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best is reported)")
    parser.add_argument("--fallback", action="store_true", help="fhirpathpy only, no fast paths")
    args = parser.parse_args()

    settings = Settings()
    definitions = definitions_from(settings.definitions_dir)
    started = time.perf_counter()
    indexer = Indexer(definitions, use_fast_paths=not args.fallback)
    compile_seconds = time.perf_counter() - started
    resources = synthea_resources(settings)

    best = best_cpu = float("inf")
    rows = 0
    by_table: Counter[str] = Counter()
    for _ in range(args.repeat):
        rows = 0
        by_table.clear()
        started, started_cpu = time.perf_counter(), time.process_time()
        for resource in resources:
            result = indexer.index(resource)
            for table, table_rows in result.by_table.items():
                by_table[table] += len(table_rows)
                rows += len(table_rows)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)

    stats = indexer.stats
    print(f"resources:          {len(resources)}")
    print(f"compile:            {compile_seconds:.2f} s")
    print(
        f"resources/s:        {len(resources) / best:,.0f} wall, {len(resources) / best_cpu:,.0f} CPU"
        f"  (best of {args.repeat}; CPU time is steadier on a shared machine)"
    )
    per_table = ", ".join(f"{table} {count}" for table, count in by_table.items())
    print(f"rows/resource:      {rows / len(resources):.1f}  ({per_table})")
    print(f"expressions:        fast {stats.fast}, fallback {stats.fallback}, skipped params {stats.skipped}")
    for expression in indexer.fast_path_report()["fallback"]:
        print(f"  fallback:         {expression}")
    for text in stats.uncompilable:
        print(f"  uncompilable:     {text}")
    total_failures = sum(indexer.failures.values())
    print(f"failed evaluations: {total_failures // args.repeat}")
    for (resource_type, code), count in indexer.failures.most_common(20):
        print(f"  {resource_type}.{code}: {count // args.repeat}")


if __name__ == "__main__":
    main()
