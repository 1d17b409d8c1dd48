"""The patient index, measured: accuracy on the population generator's planted duplicates, the
time to deduplicate 100,000 registrations, and `Patient/$match` latency.

1. Accuracy: `garrison.population` generates a population (with `--duplicates-rate`, default 10%,
   so there are enough planted pairs to measure) into a fresh SQLite database; every current
   Patient is scored by the batch job's code path (Splink on DuckDB) and the pairs graded
   "probable" or better (what the work queue receives) are compared with the generator's ground
   truth: pairwise precision and recall (targets 0.99 and 0.97), recall by kind of error, and the
   grades the look-alikes (twins, spouse, father and Jr.) received.
2. Scale: 100,000 registrations do not come from the full generator, which builds whole clinical
   histories (about 2 minutes per 5,000 patients on 2 cores, so most of an hour for 100,000);
   their identity records are made by `garrison.empi.synthetic` (families with twins, spouses and
   juniors, plus duplicates by perturbation: nickname, transposed or mistyped date, typos, married
   name, missing DoD ID or sponsor data, a move). Timed: feature extraction and Splink scoring.
3. `$match` latency: synthetic patients loaded into SQLite (and PostgreSQL with --backend), then
   each planted duplicate's registration matched against everyone (candidate lookup in the search
   index, then Splink scoring).

    python benchmarks/bench_empi.py                     # all three, defaults below
    python benchmarks/bench_empi.py --generated 2000 --synthetic 20000 --match-patients 2000
    python benchmarks/bench_empi.py --generated 0       # skip the (slow) generator part
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from common import Databases, environment, print_table, verdict, write_results
from garrison.db.engine import make_engine, read_transaction, write_transaction
from garrison.db.migrate import upgrade
from garrison.empi.features import extract_features, name_frequencies
from garrison.empi.matching import match_patient
from garrison.empi.model import GRADE_THRESHOLDS, Grade, grade_for, threshold_of
from garrison.empi.splink_engine import ScoredPair, predict_pairs
from garrison.empi.synthetic import synthetic_population
from garrison.empi.work_queue import load_patient_features
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import definitions_from
from garrison.fhir.repository import Repository
from garrison.settings import Settings

PRECISION_TARGET = 0.99
RECALL_TARGET = 0.97
MATCH_TARGET_MS = 300.0  # "hundreds of milliseconds at most at 10,000 patients"


@dataclass
class Accuracy:
    source: str
    patients: int
    true_pairs: int
    predicted: int
    precision: float
    recall: float
    by_grade: dict[str, dict[str, float]] = field(default_factory=dict)
    missed_by_kind: dict[str, str] = field(default_factory=dict)
    look_alikes: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds_generate: float = 0.0
    seconds_score: float = 0.0


def _measure(
    source: str,
    patients: int,
    scored: list[ScoredPair],
    truth: set[frozenset[str]],
    kinds: dict[frozenset[str], str],
    look_alikes: dict[frozenset[str], str],
) -> Accuracy:
    probability = {frozenset((p.left, p.right)): p.match_probability for p in scored}
    by_grade: dict[str, dict[str, float]] = {}
    for grade, threshold in GRADE_THRESHOLDS:
        predicted = {k for k, p in probability.items() if p >= threshold}
        hits = len(predicted & truth)
        by_grade[grade.value] = {
            "predicted": len(predicted),
            "precision": hits / len(predicted) if predicted else 1.0,
            "recall": hits / len(truth) if truth else 1.0,
        }
    queue = by_grade[Grade.PROBABLE.value]
    total: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for pair in truth:
        for kind in kinds.get(pair, "unknown").split("+"):
            total[kind] += 1
            if probability.get(pair, 0.0) < threshold_of(Grade.PROBABLE):
                missed[kind] += 1
    alike: dict[str, Counter[str]] = {}
    for pair, kind in look_alikes.items():
        graded = grade_for(probability.get(pair, 0.0))
        alike.setdefault(kind, Counter())[graded.value if graded else "not returned"] += 1
    return Accuracy(
        source=source,
        patients=patients,
        true_pairs=len(truth),
        predicted=int(queue["predicted"]),
        precision=queue["precision"],
        recall=queue["recall"],
        by_grade=by_grade,
        missed_by_kind={k: f"{missed[k]}/{total[k]}" for k in sorted(total)},
        look_alikes={k: dict(v) for k, v in sorted(alike.items())},
    )


def accuracy_on_generator(n: int, seed: int, rate: float, scratch: Path) -> Accuracy:
    from garrison.population.generate import PopulationOptions, generate_population
    from garrison.population.truth import ground_truth, planted_pairs

    settings = Settings(database_url=f"sqlite:///{scratch / 'generated.sqlite3'}", data_dir=scratch)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    started = time.perf_counter()
    options = PopulationOptions(patients=n, seed=seed, as_of=date(2026, 11, 1), duplicates_rate=rate)
    summary = generate_population(engine, definitions, settings, options, workers=2)
    generated = time.perf_counter() - started
    if summary.errors:
        print(f"  generator reported {len(summary.errors)} load errors, e.g. {summary.errors[0]}")
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("bench-empi"))
        started = time.perf_counter()
        features = load_patient_features(repo)
        truth = ground_truth(connection)
        planted = planted_pairs(connection)
    first_tf, surname_tf = name_frequencies(features)
    scored = predict_pairs(
        features, min_probability=threshold_of(Grade.POSSIBLE), first_name_tf=first_tf, surname_tf=surname_tf
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    kinds = {frozenset((p.a, p.b)): p.kind for p in planted if p.same_person}
    alike = {frozenset((p.a, p.b)): p.kind for p in planted if not p.same_person}
    result = _measure("population generator", len(features), scored, truth, kinds, alike)
    result.seconds_generate, result.seconds_score = generated, seconds
    return result


def dedupe_synthetic(n: int, seed: int) -> Accuracy:
    started = time.perf_counter()
    population = synthetic_population(n, seed=seed)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    features = [extract_features(p) for p in population.patients]
    first_tf, surname_tf = name_frequencies(features)
    scored = predict_pairs(
        features, min_probability=threshold_of(Grade.POSSIBLE), first_name_tf=first_tf, surname_tf=surname_tf
    )
    seconds = time.perf_counter() - started
    kinds = {}
    for pair in population.duplicates:
        a, b = sorted(pair)
        kinds[pair] = "+".join(population.errors.get(b) or population.errors.get(a) or ("unknown",))
    alike = {pair: kind for kind, pairs in population.hard_pairs.items() for pair in pairs}
    result = _measure("synthetic registrations", len(features), scored, population.duplicates, kinds, alike)
    result.seconds_generate, result.seconds_score = generated, seconds
    return result


@dataclass
class MatchLatency:
    backend: str
    patients: int
    queries: int
    top1: float  # share of queries whose best candidate is the true original
    p50_ms: float
    p95_ms: float
    max_ms: float


def match_latency(n: int, backend: str, url: str, queries: int) -> MatchLatency:
    population = synthetic_population(n, seed=3, duplicate_rate=0.03)
    originals: dict[str, str] = {}
    for pair in population.duplicates:
        a, b = sorted(pair)
        originals[b] = a  # the duplicate has the later id
    stored = [p for p in population.patients if p["id"] not in originals]
    registrations = [p for p in population.patients if p["id"] in originals][:queries]
    settings = Settings(database_url=url)
    engine = make_engine(url)
    upgrade(engine)
    definitions = definitions_from(settings.definitions_dir)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("bench-empi"))
        with repo.deferred_writes():
            for patient in stored:
                repo.update("Patient", patient["id"], patient)
    if backend == "postgresql":
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    timings: list[float] = []
    top = 0
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("bench-empi"))
        match_patient(repo, dict(registrations[0]))  # compiles the scoring SQL once
        for patient in registrations:
            query = {k: v for k, v in patient.items() if k != "id"}
            started = time.perf_counter()
            candidates = match_patient(repo, query)
            timings.append((time.perf_counter() - started) * 1000)
            if candidates and candidates[0].patient.id == originals[patient["id"]]:
                top += 1
    engine.dispose()
    timings.sort()
    return MatchLatency(
        backend=backend,
        patients=len(stored),
        queries=len(timings),
        top1=top / max(len(timings), 1),
        p50_ms=statistics.median(timings),
        p95_ms=timings[int(len(timings) * 0.95) - 1],
        max_ms=timings[-1],
    )


def print_accuracy(result: Accuracy) -> None:
    print(
        f"\n{result.source}: {result.patients:,} patients, {result.true_pairs} true duplicate pairs; "
        f"scored in {result.seconds_score:.1f} s (made in {result.seconds_generate:.1f} s)"
    )
    rows = [
        [grade, f"{int(v['predicted'])}", f"{v['precision']:.4f}", f"{v['recall']:.4f}"]
        for grade, v in result.by_grade.items()
    ]
    print_table(["at least", "pairs", "precision", "recall"], rows)
    print(
        f"work queue (probable or better): precision {result.precision:.4f} "
        f"[{verdict(result.precision, PRECISION_TARGET, higher_is_better=True)}], "
        f"recall {result.recall:.4f} [{verdict(result.recall, RECALL_TARGET, higher_is_better=True)}]"
    )
    print(f"missed at probable, by kind of error: {result.missed_by_kind}")
    print(f"look-alikes (never duplicates), by grade received: {result.look_alikes}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--generated", type=int, default=5000, help="patients from the generator (0: skip)")
    parser.add_argument("--duplicates-rate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--synthetic", type=int, default=100_000, help="synthetic registrations (0: skip)")
    parser.add_argument("--match-patients", type=int, default=10_000, help="patients for $match (0: skip)")
    parser.add_argument("--match-queries", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="also write benchmarks/results/bench_empi-*.json")
    args = parser.parse_args(argv)
    print(f"environment: {environment()}")
    results: list[Any] = []
    with Databases() as databases:
        if args.generated:
            print(
                f"-- accuracy on {args.generated:,} generated patients "
                f"(duplicates rate {args.duplicates_rate})"
            )
            accuracy = accuracy_on_generator(
                args.generated, args.seed, args.duplicates_rate, databases.scratch
            )
            print_accuracy(accuracy)
            results.append(accuracy)
        if args.synthetic:
            print(f"\n-- deduplicating {args.synthetic:,} synthetic registrations")
            dedupe = dedupe_synthetic(args.synthetic, args.seed)
            print_accuracy(dedupe)
            results.append(dedupe)
        if args.match_patients:
            backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
            rows = []
            for backend in backends:
                print(f"\n-- $match against {args.match_patients:,} patients on {backend}")
                latency = match_latency(
                    args.match_patients, backend, databases.new(backend), args.match_queries
                )
                results.append(latency)
                rows.append(
                    [
                        backend,
                        f"{latency.patients:,}",
                        str(latency.queries),
                        f"{latency.top1:.3f}",
                        f"{latency.p50_ms:.1f}",
                        f"{latency.p95_ms:.1f}",
                        f"{latency.max_ms:.1f}",
                        verdict(latency.p95_ms, MATCH_TARGET_MS, higher_is_better=False),
                    ]
                )
            print_table(
                ["backend", "patients", "queries", "top-1", "p50 ms", "p95 ms", "max ms", "verdict"], rows
            )
    if args.json:
        print(f"results: {write_results('bench_empi', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
