"""Fast NDJSON loading: validation and indexing in worker processes, rows written with COPY.

NDJSON resources keep their ids (as in a FHIR bulk export), so loading an export reproduces it.
Each worker takes a chunk of lines and, in one transaction of its own, validates and indexes
them and inserts first versions directly: PostgreSQL `COPY`, SQLite `executemany`. Resources
that already exist, repeat an id, or collide with another worker's go through the ordinary
Repository update path instead, so the outcome is the same as a sequence of FHIR updates.
Invalid lines are reported with their line number and skipped; valid lines still load.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from garrison.db.engine import is_postgres, make_engine, write_transaction
from garrison.db.indexes import built_after_load
from garrison.errors import GarrisonError
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.consent_rules import bump_consent_generation
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.jsoncodec import parse_json
from garrison.fhir.repository import (
    PreparedVersion,
    Repository,
    insert_versions,
    prepare_version,
    settle_for_writes,
)
from garrison.settings import Settings

CHUNK_LINES = 2000


@dataclass
class ChunkResult:
    loaded: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.loaded.total()


@dataclass(frozen=True, slots=True)
class _Chunk:
    origin: str
    first_line: int
    lines: list[bytes]


# Per-process state of a worker (set by _init_worker; a process serves one load).
_worker: dict[str, Any] = {}


def _init_worker(settings: Settings) -> None:
    _worker["settings"] = settings
    _worker["definitions"] = definitions_from(settings.definitions_dir)
    _worker["engine"] = make_engine(settings.resolved_database_url(), pool_size=1)
    settle_for_writes(_worker["definitions"])


def _load_chunk(chunk: _Chunk) -> ChunkResult:
    with _collector_paused():
        return load_chunk(_worker["engine"], _worker["definitions"], _worker["settings"], chunk)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsed JSON and index rows hold no reference cycles, so while a chunk is alive the cyclic
    collector would only re-scan it: measured, a third of the CPU of preparing the chunk."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_chunk(engine: Engine, definitions: Definitions, settings: Settings, chunk: _Chunk) -> ChunkResult:
    result = ChunkResult()
    prepared: list[PreparedVersion] = []
    parsed: list[dict[str, Any]] = []
    for offset, line in enumerate(chunk.lines):
        where = f"{chunk.origin}:{chunk.first_line + offset}"
        try:
            item = parse_json(line)
        except orjson.JSONDecodeError as exc:
            result.errors.append(f"{where}: not JSON ({exc})")
            continue
        resource_type = item.get("resourceType") if isinstance(item, dict) else None
        resource_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(resource_type, str) or resource_type not in definitions.resource_types:
            result.errors.append(f"{where}: not a FHIR resource of a known type")
            continue
        if not isinstance(resource_id, str):
            result.errors.append(f"{where}: an NDJSON resource must carry its id")
            continue
        try:
            prepared.append(prepare_version(definitions, item, resource_id, 1))
            parsed.append(item)
        except GarrisonError as error:
            detail = "; ".join(f"{i.expression or ''} {i.diagnostics}".strip() for i in error.issues[:3])
            result.errors.append(f"{where}: {resource_type}/{resource_id} invalid: {detail}")
    if not prepared:
        return result
    try:
        with write_transaction(engine) as connection:
            fresh, rest = _split_fresh(connection, prepared, parsed)
            _insert_first_versions(connection, fresh)
            _update_existing(connection, definitions, settings, rest)
            if any(p.stored.resource_type == "Consent" for p in fresh):
                # In this transaction (see consent_rules), and last: nothing here reads Consents,
                # and on PostgreSQL the row lock it takes is then never held while waiting for
                # another worker's rows.
                bump_consent_generation(connection)
    except IntegrityError:
        # Another worker created one of these ids meanwhile: redo this chunk the slow, safe way.
        with write_transaction(engine) as connection:
            _update_existing(connection, definitions, settings, parsed)
    for version in prepared:
        result.loaded[version.stored.resource_type] += 1
    return result


def _split_fresh(
    connection: Connection, prepared: list[PreparedVersion], parsed: list[dict[str, Any]]
) -> tuple[list[PreparedVersion], list[dict[str, Any]]]:
    keys = [(p.stored.resource_type, p.stored.id) for p in prepared]
    existing = _existing_keys(connection, keys)
    fresh: list[PreparedVersion] = []
    rest: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for key, version, item in zip(keys, prepared, parsed, strict=True):
        if key in existing or key in seen:
            rest.append(item)
        else:
            seen.add(key)
            fresh.append(version)
    return fresh, rest


def _existing_keys(connection: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    # Two parameters holding every key (arrays, or a JSON list on SQLite): a chunk's thousands of
    # keys as separate bound values cost more to build than the primary-key lookups themselves.
    if is_postgres(connection):
        found = connection.exec_driver_sql(
            "SELECT resource_type, id FROM resource WHERE (resource_type, id) IN "
            "(SELECT * FROM unnest(%(types)s::text[], %(ids)s::text[]))",
            {"types": [key[0] for key in keys], "ids": [key[1] for key in keys]},
        )
    else:
        found = connection.exec_driver_sql(
            "SELECT resource_type, id FROM resource WHERE (resource_type, id) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
            (orjson.dumps(keys).decode(),),
        )
    return {(row[0], row[1]) for row in found}


def _insert_first_versions(connection: Connection, prepared: list[PreparedVersion]) -> None:
    # History says PUT: an NDJSON line keeps its id, as an update-as-create would.
    insert_versions(
        connection,
        fresh=[p.stored for p in prepared],
        versions=[(p.stored, "PUT", p.index_rows) for p in prepared],
    )


def _update_existing(
    connection: Connection, definitions: Definitions, settings: Settings, items: list[dict[str, Any]]
) -> None:
    if not items:
        return
    repo = Repository(connection, definitions, settings, AccessContext.system("import"))
    with repo.deferred_writes():
        for item in items:
            repo.update(item["resourceType"], item["id"], item)


def _chunks(path: Path) -> Iterator[_Chunk]:
    lines: list[bytes] = []
    first = 1
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not lines:
                first = number
            lines.append(line)
            if len(lines) >= CHUNK_LINES:
                yield _Chunk(path.name, first, lines)
                lines = []
    if lines:
        yield _Chunk(path.name, first, lines)


def count_lines(path: Path) -> int:
    """The NDJSON lines of `path` (the non-blank ones, as `_chunks` yields them)."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def load_ndjson(
    settings: Settings,
    paths: list[Path],
    progress: Callable[[int], None] | None = None,
    *,
    workers: int | None = None,
    defer_indexes_from: int = 10_000,
) -> ChunkResult:
    """Load NDJSON files with `workers` processes (default: one per CPU). A load of at least
    `defer_indexes_from` lines into a store holding under a tenth as many resources builds the
    secondary indexes once the rows are in (`garrison.db.indexes`)."""
    total = ChunkResult()
    chunks = (chunk for path in paths for chunk in _chunks(path))
    processes = workers if workers is not None else (os.cpu_count() or 1)
    engine = make_engine(settings.resolved_database_url(), pool_size=2)
    try:
        incoming = sum(count_lines(path) for path in paths)
        with built_after_load(engine, incoming, at_least=defer_indexes_from):
            engine.dispose()  # no pooled connection is shared with the forked workers
            if processes <= 1:
                _init_worker(settings)
                _merge(map(_load_chunk, chunks), total, progress)
            else:
                # Compiled once here, and shared with the forked workers (each compiled its own:
                # 0.7 s of both cores before the first row).
                settle_for_writes(definitions_from(settings.definitions_dir))
                context = multiprocessing.get_context("fork")
                with context.Pool(processes, initializer=_init_worker, initargs=(settings,)) as pool:
                    _merge(pool.imap(_load_chunk, chunks), total, progress)
    finally:
        engine.dispose()
    return total


def _merge(
    results: Iterator[ChunkResult], total: ChunkResult, progress: Callable[[int], None] | None
) -> None:
    for result in results:
        total.loaded.update(result.loaded)
        total.errors.extend(result.errors)
        if progress:
            progress(result.count + len(result.errors))
