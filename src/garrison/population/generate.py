"""`garrison generate`: make a population, write it as NDJSON, load it through the bulk path.

The population is a pure function of (seed, number of patients, duplicate rate, as-of date):
families are drawn one by one until the number of people is reached, each person's record is
written to one NDJSON file per resource type (ids kept, references as `Type/id`, as in a FHIR
bulk export), and `garrison.fhir.bulk_load.load_ndjson` validates, indexes and stores them in
parallel. The facility network is loaded first (idempotently) so every reference to an
Organization, Location, HealthcareService, Practitioner or PractitionerRole resolves; the ground
truth of the planted duplicates goes to `population_pair` last.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO

import orjson
from sqlalchemy import Engine

from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.bulk_load import load_ndjson
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.network.load import load_network
from garrison.population.builders import Json
from garrison.population.chart import Chart, primary_care_manager
from garrison.population.duplicates import DuplicatePlanter, Pair, look_alikes
from garrison.population.families import HISTORY_YEARS, FamilyBuilder
from garrison.population.health import add_pregnancies, plan_health
from garrison.population.identity import identity_resources
from garrison.population.ids import IdFactory, UniqueNumbers, rng_for
from garrison.population.people import Family, Person, Role, add_years
from garrison.population.sites import NetworkView, Site, view_of
from garrison.population.truth import store_pairs
from garrison.population.visits import VisitPlanner, plan_vaccinations
from garrison.settings import Settings

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PopulationOptions:
    patients: int
    seed: int
    as_of: date
    duplicates_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ValueError("a population needs at least one patient")
        if not 0.0 <= self.duplicates_rate <= 1.0:
            raise ValueError("the duplicates rate is a share between 0 and 1")


@dataclass
class PopulationStats:
    """What was generated: counts for the summary and the tests."""

    people: int = 0
    families: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    family_kinds: Counter[str] = field(default_factory=Counter)
    life_events: Counter[str] = field(default_factory=Counter)
    pairs: list[Pair] = field(default_factory=list)
    duplicate_of: dict[str, str] = field(default_factory=dict)  # duplicate Patient id -> original id

    @property
    def duplicates(self) -> int:
        return sum(1 for p in self.pairs if p.same_person)

    @property
    def look_alikes(self) -> int:
        return sum(1 for p in self.pairs if not p.same_person)

    @property
    def resources(self) -> int:
        return self.by_type.total()


class _Registry:
    """Per-facility medical record numbers and the population's DoD IDs and VA ICNs."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._edipi = UniqueNumbers(seed, "edipi", 1_000_000_000, 10_000_000_000)
        self._icn = UniqueNumbers(seed, "icn", 1_000_000_000, 10_000_000_000)
        self._mrn: dict[str, UniqueNumbers] = {}
        self._issued: Counter[str] = Counter()

    def number(self, person: Person) -> None:
        ids = IdFactory(self.seed, f"person/{person.number}")
        person.patient_id = ids.named("Patient")
        person.edipi = str(self._edipi.number(person.number))
        if person.uses_va:
            # An ICN is ten digits, "V" and a six-digit checksum (here: digits derived from it).
            base = self._icn.number(person.number)
            person.icn = f"{base}V{(base * 7919) % 1_000_000:06d}"

    def mrn(self, site: Site) -> str:
        numbers = self._mrn.get(site.code)
        if numbers is None:
            numbers = self._mrn[site.code] = UniqueNumbers(
                self.seed, f"mrn/{site.code}", 10_000_000, 100_000_000
            )
        issued = self._issued[site.code]
        self._issued[site.code] += 1
        return str(numbers.number(issued))


def _births_by_mother(family: Family) -> dict[int, list[date]]:
    """The family's children born to each woman of the household (for prenatal care records)."""
    women = [p for p in family.members if p.sex == "female" and p.role is not Role.CHILD]
    found: dict[int, list[date]] = {}
    for child in (p for p in family.members if p.role is Role.CHILD):
        for woman in women:
            married = woman.married or woman.birth_date
            if woman is family.sponsor or married <= child.birth_date < (woman.divorced or date.max):
                births = found.setdefault(id(woman), [])
                if child.birth_date not in births:
                    births.append(child.birth_date)
                break
    return found


class Population:
    """Generates the resources of a population, person by person."""

    def __init__(self, options: PopulationOptions, network: NetworkView) -> None:
        self.options = options
        self.network = network
        self.as_of = options.as_of
        self.start = add_years(options.as_of, -HISTORY_YEARS)
        self.stats = PopulationStats()
        self._registry = _Registry(options.seed)
        self._planter = DuplicatePlanter(
            options.seed, options.duplicates_rate, network, start=self.start, as_of=self.as_of
        )

    def records(self) -> Iterator[tuple[Person, list[Json]]]:
        """Each person with their resources, in turn (a planted duplicate follows its original)."""
        options, stats = self.options, self.stats
        builder = FamilyBuilder(options.seed, self.as_of, self.network)
        family_index = 0
        while stats.people < options.patients:
            family = builder.build(family_index, options.patients - stats.people)
            family_index += 1
            stats.families += 1
            stats.family_kinds[family.kind.value] += 1
            for person in family.members:
                person.number = stats.people
                stats.people += 1
                self._registry.number(person)
            births = _births_by_mother(family)
            for person in family.members:
                yield person, self._person(family, person, births.get(id(person), []))
            stats.pairs.extend(look_alikes(family.members))
        stats.pairs.extend(self._planter.pairs)

    def _person(self, family: Family, person: Person, births: list[date]) -> list[Json]:
        rng: random.Random = rng_for(self.options.seed, "chart", person.number)
        ids = IdFactory(self.options.seed, f"person/{person.number}")
        health = plan_health(rng, person, self.start, self.as_of)
        add_pregnancies(rng, health, births, self.as_of)
        pcm = primary_care_manager(rng, person, self.as_of)
        visits = VisitPlanner(rng, person, health, self.start, self.as_of).plan()
        doses = plan_vaccinations(rng, person, self.start, self.as_of)
        chart = Chart(person, health, ids=ids, rng=rng, network=self.network, as_of=self.as_of, pcm=pcm)
        chart.write(visits, doses)
        seen = dict(chart.sites_seen)
        if pcm is not None:
            seen.setdefault(pcm[0].code, pcm[0])
        mrns = [(site, self._registry.mrn(site)) for site in seen.values()]
        resources = identity_resources(
            person,
            ids=ids,
            as_of=self.as_of,
            mrns=mrns,
            pcm=pcm,
            family_sponsor=family.sponsor,
            payer_id=self.network.payer_id,
        )
        resources.extend(chart.resources)
        if self._planter.wants(person):
            before = len(resources)
            resources.extend(
                self._planter.plant(
                    person,
                    resources[0],
                    seen=set(seen),
                    health=health,
                    ids=ids,
                    mrn_for=self._registry.mrn,
                )
            )
            if len(resources) > before:
                self.stats.duplicate_of[resources[before]["id"]] = person.patient_id
        stats = self.stats
        stats.categories[person.category.value if person.category else "none"] += 1
        for event in person.events:
            stats.life_events[event.kind] += 1
        for resource in resources:
            stats.by_type[resource["resourceType"]] += 1
        return resources


def write_ndjson(
    options: PopulationOptions, network: NetworkView, directory: Path, progress: Progress | None = None
) -> tuple[list[Path], PopulationStats]:
    """Write the population as NDJSON, one file per resource type; `progress` is called per person."""
    directory.mkdir(parents=True, exist_ok=True)
    population = Population(options, network)
    paths: dict[str, Path] = {}
    with ExitStack() as stack:
        handles: dict[str, IO[bytes]] = {}
        for _, resources in population.records():
            for resource in resources:
                kind = resource["resourceType"]
                handle = handles.get(kind)
                if handle is None:
                    paths[kind] = directory / f"{kind}.ndjson"
                    handle = handles[kind] = stack.enter_context(paths[kind].open("wb"))
                handle.write(orjson.dumps(resource))
                handle.write(b"\n")
            if progress is not None:
                progress(1)
    return [paths[k] for k in sorted(paths)], population.stats


@dataclass
class GenerationSummary:
    options: PopulationOptions
    stats: PopulationStats
    loaded: int
    errors: list[str]
    network_resources: int
    seconds_generate: float
    seconds_load: float

    @property
    def seconds(self) -> float:
        return self.seconds_generate + self.seconds_load


def load_network_view(
    engine: Engine, definitions: Definitions, settings: Settings
) -> tuple[NetworkView, int]:
    """Load (or find, unchanged) the facility network and return the generator's view of it."""
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("population-generator"))
        summary = load_network(repo)
    return view_of(summary), summary.resource_count


def generate_population(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    options: PopulationOptions,
    *,
    workers: int | None = None,
    on_person: Progress | None = None,
    on_loaded: Progress | None = None,
    on_generated: Progress | None = None,
    directory: Path | None = None,
) -> GenerationSummary:
    """Generate the population and load it into the store of `settings`, ground truth included.

    The database must be migrated. NDJSON goes to `directory` if given (kept), else to a
    temporary directory removed afterwards. `on_person` is called as people are generated,
    `on_generated` once with the number of resources written, `on_loaded` as they are stored.
    """
    network, network_resources = load_network_view(engine, definitions, settings)
    with tempfile.TemporaryDirectory(prefix="garrison-population-") as scratch:
        target = directory or Path(scratch)
        started = time.perf_counter()
        paths, stats = write_ndjson(options, network, target, on_person)
        generated = time.perf_counter()
        if on_generated is not None:
            on_generated(stats.resources)
        result = load_ndjson(settings, paths, on_loaded, workers=workers)
        loaded = time.perf_counter()
    with write_transaction(engine) as connection:
        store_pairs(connection, stats.pairs, options.seed)
    return GenerationSummary(
        options=options,
        stats=stats,
        loaded=result.count,
        errors=result.errors,
        network_resources=network_resources,
        seconds_generate=generated - started,
        seconds_load=loaded - generated,
    )
