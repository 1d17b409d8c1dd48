"""`Observation?patient=X&code=Y&_sort=-date` as callers who see only some records, in process.

The search benchmark (`bench_search.py`) asks as a backend client that sees every record. Most
searches in an EHR are a clinician's (reach: the patients in their facility's care) or a
patient's own (portal, patient-level apps), and add the guard's visibility conditions
(fhir/authz/guard.py). This times the same search through `Repository.search` (statement, guard,
Python; no HTTP, no audit append) for: the unrestricted backend client, a physician at a facility
that saw the patient (an Encounter's serviceProvider), and the patient themself. The population
is loaded with `garrison import` as in the other benchmarks.

    python benchmarks/bench_restricted_search.py --backend both --patients 1000
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from bench_ingest import Loaded, import_population
from common import (
    Databases,
    analyze_database,
    backends_of,
    base_parser,
    latency_summary,
    phase,
    print_machine_speed,
    print_table,
    sizes_of,
)
from garrison.db.engine import make_engine, read_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import definitions_from
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.settings import Settings
from population import Population

Caller = Callable[[str], AccessContext]


def _facilities(engine: Engine) -> dict[str, str]:
    """A facility that saw each patient: the serviceProvider of one of their Encounters."""
    query = text(
        "SELECT s.target_id, p.target_id FROM search_reference s JOIN search_reference p"
        " ON p.resource_type = s.resource_type AND p.resource_id = s.resource_id"
        " WHERE s.resource_type = 'Encounter' AND s.param = 'patient' AND s.target_type = 'Patient'"
        " AND p.param = 'service-provider' AND p.target_type = 'Organization'"
    )
    with read_transaction(engine) as connection:
        return {patient: facility for patient, facility in connection.execute(query)}


def _callers(facilities: dict[str, str]) -> dict[str, Caller]:
    return {
        "backend client (all records)": lambda _patient: AccessContext.system("bench"),
        "physician (facility's care)": lambda patient: AccessContext(
            actor="Practitioner/bench", role="physician", facility=facilities[patient], audited=False
        ),
        "the patient (own record)": lambda patient: AccessContext(
            actor=f"Patient/{patient}", role="patient", patient=patient, audited=False
        ),
    }


def _time(engine: Engine, settings: Settings, loaded: Loaded, caller: Caller, searches: int) -> list[float]:
    definitions = definitions_from(settings.definitions_dir)
    rng = random.Random(7)  # the same searches for every caller
    elapsed: list[float] = []
    for _ in range(searches):
        patient = rng.choice(loaded.patients)
        code = rng.choice(patient.observation_codes[:3])
        request = SearchRequest("Observation", [("patient", patient.id), ("code", code), ("_sort", "-date")])
        started = time.perf_counter()
        with read_transaction(engine) as connection:
            Repository(connection, definitions, settings, caller(patient.id)).search(request)
        elapsed.append(1000 * (time.perf_counter() - started))
    return elapsed  # ms


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", default="1000", help="population sizes, colon-separated")
    parser.add_argument("--searches", type=int, default=300, help="timed searches per caller and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, callers alternating within each")
    args = parser.parse_args()
    rows: list[list[str]] = []
    population = Population()
    with Databases() as databases:
        for backend in backends_of(args.backend):
            for patients in sizes_of(args.patients):
                url = databases.new(backend)
                with phase(f"garrison import {patients} patients into {backend}"):
                    _, loaded = import_population(databases, url, population, backend, patients)
                    analyze_database(url)
                engine = make_engine(url)
                settings = Settings(database_url=url, base_url="http://127.0.0.1:8000/fhir")
                callers = _callers(_facilities(engine))
                for caller in callers.values():  # warm: statements compiled, caches filled
                    _time(engine, settings, loaded, caller, 30)
                timings: dict[str, list[float]] = {name: [] for name in callers}
                for _ in range(args.rounds):
                    for name, caller in callers.items():
                        timings[name] += _time(engine, settings, loaded, caller, args.searches)
                for name, elapsed in timings.items():
                    summary = latency_summary(elapsed)
                    rows.append(
                        [
                            backend,
                            str(patients),
                            name,
                            str(len(elapsed)),
                            f"{summary['p50_ms']:.2f}",
                            f"{summary['p95_ms']:.2f}",
                        ]
                    )
                engine.dispose()
    print_table(["backend", "patients", "caller", "searches", "p50 ms", "p95 ms"], rows)
    print_machine_speed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
