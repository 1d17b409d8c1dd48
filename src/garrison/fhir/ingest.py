"""Bulk loading and unloading of the store: import Bundles/NDJSON, export NDJSON, reindex.

Every path goes through the same Repository as the API (validation, history, index rows), under
an explicit system AccessContext naming the job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, bindparam, delete, select

from garrison.db.engine import snapshot_transaction, write_transaction
from garrison.db.schema import INDEX_TABLES, resource
from garrison.errors import GarrisonError
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.consent_rules import bump_consent_generation
from garrison.fhir.bulk_load import count_lines, load_ndjson
from garrison.fhir.definitions import Definitions
from garrison.fhir.jsoncodec import parse_json
from garrison.fhir.repository import Repository, insert_index_rows
from garrison.fhir.router import FhirRequest, FhirRouter
from garrison.fhir.search.indexer import indexer_for
from garrison.settings import Settings

Progress = Callable[[int], None]  # called with the number of resources just processed


@dataclass
class ImportSummary:
    files: int = 0
    resources: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def discover(paths: list[Path]) -> list[Path]:
    """Bundle (.json) and NDJSON (.ndjson) files named directly or found in directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")))
        else:
            found.append(path)
    return found


def count_resources(path: Path) -> int:
    if path.suffix == ".ndjson":
        return count_lines(path)
    try:
        data = parse_json(path.read_bytes())
    except orjson.JSONDecodeError:
        return 0
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        return len(data.get("entry", []))
    return 1


def import_paths(
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    paths: list[Path],
    progress: Progress | None = None,
    *,
    workers: int | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> ImportSummary:
    """Load Bundles (each as one FHIR interaction) and NDJSON files (in parallel, ids kept).

    `transform` rewrites each Bundle (or single resource) file before it is loaded: domain
    packages use it, e.g. to map Synthea's civilian care onto the facility network."""
    summary = ImportSummary()
    router = FhirRouter(settings.base_url)
    context = AccessContext.system("import")
    files = discover(paths)
    ndjson = [p for p in files if p.suffix == ".ndjson"]
    for path in files:
        if path.suffix == ".ndjson":
            continue
        summary.files += 1
        try:
            _import_json(
                engine=engine,
                definitions=definitions,
                settings=settings,
                context=context,
                router=router,
                path=path,
                summary=summary,
                progress=progress,
                transform=transform,
            )
        except GarrisonError as error:
            summary.errors.append(f"{path.name}: {error.message}")
        except (OSError, orjson.JSONDecodeError) as error:
            summary.errors.append(f"{path.name}: {error}")
    if ndjson:
        summary.files += len(ndjson)
        loaded = load_ndjson(settings, ndjson, progress, workers=workers)
        summary.by_type.update(loaded.loaded)
        summary.resources += loaded.count
        summary.errors.extend(loaded.errors)
    return summary


def _import_json(
    *,
    engine: Engine,
    definitions: Definitions,
    settings: Settings,
    context: AccessContext,
    router: FhirRouter,
    path: Path,
    summary: ImportSummary,
    progress: Progress | None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> None:
    data = parse_json(path.read_bytes())
    if not isinstance(data, dict):
        raise GarrisonError(f"{path.name} does not hold a FHIR resource")
    if transform is not None:
        data = transform(data)
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, context)
        if data.get("resourceType") == "Bundle" and data.get("type") in ("transaction", "batch"):
            response = router.handle(repo, FhirRequest("POST", "", body=data))
            entries = data.get("entry", [])
            reply = response.json() or {}
            for entry, answer in zip(entries, reply.get("entry", []), strict=False):
                status = str(answer.get("response", {}).get("status", ""))
                if status.startswith("2"):
                    summary.by_type[entry.get("resource", {}).get("resourceType", "?")] += 1
                    summary.resources += 1
                else:
                    summary.errors.append(f"{path.name}: entry {entry.get('fullUrl')}: {status}")
            if progress:
                progress(len(entries))
        else:
            outcome = (
                repo.update(data["resourceType"], data["id"], data)
                if isinstance(data.get("id"), str)
                else repo.create(data)
            )
            summary.by_type[outcome.stored.resource_type] += 1
            summary.resources += 1
            if progress:
                progress(1)


def export_ndjson(
    engine: Engine, out_dir: Path, types: set[str] | None = None, progress: Progress | None = None
) -> Counter[str]:
    """Write one `<Type>.ndjson` per resource type holding every current (not deleted) resource."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with snapshot_transaction(engine) as connection:
        query = (
            select(resource.c.resource_type, resource.c.content)
            .where(resource.c.deleted.is_(False))
            .order_by(resource.c.resource_type, resource.c.id)
            .execution_options(yield_per=2000)
        )
        handle = None
        current_type = None
        try:
            for row in connection.execute(query):
                if types is not None and row.resource_type not in types:
                    continue
                if row.resource_type != current_type:
                    if handle:
                        handle.close()
                    current_type = row.resource_type
                    handle = (out_dir / f"{current_type}.ndjson").open("w", encoding="utf-8")
                assert handle is not None
                handle.write(row.content)
                handle.write("\n")
                counts[row.resource_type] += 1
                if progress and counts.total() % 1000 == 0:
                    progress(1000)
        finally:
            if handle:
                handle.close()
    return counts


def reindex(
    engine: Engine, definitions: Definitions, progress: Progress | None = None, batch_size: int = 1000
) -> int:
    """Rebuild every search index row from the stored resources (after definitions change)."""
    indexer = indexer_for(definitions)
    done = 0
    last: tuple[str, str] = ("", "")
    while True:
        with write_transaction(engine) as connection:
            rows = connection.execute(
                select(resource.c.resource_type, resource.c.id, resource.c.content)
                .where(
                    resource.c.deleted.is_(False),
                    (resource.c.resource_type > last[0])
                    | ((resource.c.resource_type == last[0]) & (resource.c.id > last[1])),
                )
                .order_by(resource.c.resource_type, resource.c.id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            keys = [(r.resource_type, r.id) for r in rows]
            for table in INDEX_TABLES.values():
                connection.execute(
                    delete(table).where(
                        table.c.resource_type == bindparam("rtype"), table.c.resource_id == bindparam("rid")
                    ),
                    [{"rtype": rtype, "rid": rid} for rtype, rid in keys],
                )
            insert_index_rows(
                connection, ((r.resource_type, r.id, indexer.index(parse_json(r.content))) for r in rows)
            )
            if any(rtype == "Consent" for rtype, _ in keys):
                # A Consent's index rows say whose it is: processes re-read the Consents.
                bump_consent_generation(connection)
            last = keys[-1]
            done += len(rows)
        if progress:
            progress(len(rows))
    return done
