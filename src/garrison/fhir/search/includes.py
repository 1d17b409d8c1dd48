"""`_include` and `_revinclude` (https://hl7.org/fhir/R4/search.html#include).

Each round costs two queries whatever the page size: one over `search_reference` for every
include specification at once, one fetching every newly found resource. `:iterate`
specifications are applied again to what the previous round added, up to
`settings.max_include_depth` further rounds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, false, or_, select

from garrison.db.schema import resource, search_reference
from garrison.errors import TooCostly
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.aliases import Aliases
from garrison.fhir.search.parse import IncludeSpec
from garrison.fhir.search.predicates import MatchContext, local_reference

Key = tuple[str, str]

RESOURCE_COLUMNS = (
    resource.c.resource_type,
    resource.c.id,
    resource.c.version_id,
    resource.c.last_updated,
    resource.c.deleted,
    resource.c.content,
)


@dataclass
class IncludeResult:
    resources: list[StoredResource] = field(default_factory=list)
    truncated: bool = False  # :iterate stopped at the depth limit with more to follow


def fetch_included(
    connection: Connection,
    specs: list[IncludeSpec],
    matches: list[StoredResource],
    ctx: MatchContext,
    *,
    max_depth: int,
    max_resources: int,
    admit: Callable[[Sequence[Key]], list[Key]] | None = None,
) -> IncludeResult:
    """Resources to include for `matches`; TooCostly past `max_resources` of them. `admit`
    keeps only the keys the caller may see (the access guard); None admits all."""
    result = IncludeResult()
    if not specs or not matches:
        return result
    seen: set[Key] = {(m.resource_type, m.id) for m in matches}
    iterating = [s for s in specs if s.iterate]
    frontier = matches
    active = specs
    rounds = 0
    while frontier and active:
        if rounds > max_depth:
            result.truncated = True
            break
        by_type: dict[str, list[str]] = defaultdict(list)
        for item in frontier:
            by_type[item.resource_type].append(item.id)
        found: list[Key] = []
        forward = [s for s in active if not s.reverse]
        reverse = [s for s in active if s.reverse]
        if forward:
            found.extend(_forward_targets(connection, forward, by_type, ctx))
        if reverse:
            found.extend(_reverse_sources(connection, reverse, by_type, ctx))
        fresh = [k for k in dict.fromkeys(found) if k not in seen]
        seen.update(fresh)
        if admit is not None:
            fresh = admit(fresh)
        frontier = fetch_resources(connection, fresh)
        result.resources.extend(frontier)
        if len(result.resources) > max_resources:
            raise TooCostly(
                f"_include/_revinclude would add more than {max_resources} resources to the page; "
                "ask for fewer matches per page with _count"
            )
        active = iterating
        rounds += 1
    return result


def fetch_resources(connection: Connection, keys: Iterable[Key]) -> list[StoredResource]:
    """The current, non-deleted versions of `keys`, in one query."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for resource_type, resource_id in keys:
        grouped[resource_type].append(resource_id)
    if not grouped:
        return []
    r = Aliases()(resource)
    columns = [r.c[c.name] for c in RESOURCE_COLUMNS]
    rows = connection.execute(
        select(*columns)
        .where(
            or_(*(and_(r.c.resource_type == t, r.c.id.in_(ids)) for t, ids in grouped.items())),
            r.c.deleted == false(),
        )
        .order_by(r.c.resource_type, r.c.id)
    )
    return [StoredResource(*row) for row in rows]


def _spec_applies(spec: IncludeSpec, resource_type: str) -> bool:
    return spec.source_type is None or spec.source_type == resource_type


def _forward_targets(
    connection: Connection, specs: list[IncludeSpec], by_type: dict[str, list[str]], ctx: MatchContext
) -> list[Key]:
    """Resources that the frontier refers to through the specified reference parameters.

    All reference rows of the frontier are read through the per-resource index and filtered
    here: a resource has only a handful, and a `param` condition in SQL tempts SQLite into
    walking the (type, param) index over every resource of the type instead.
    """
    sr = Aliases()(search_reference)
    clauses = [
        and_(sr.c.resource_type == resource_type, sr.c.resource_id.in_(ids))
        for resource_type, ids in by_type.items()
        if any(_spec_applies(s, resource_type) for s in specs)
    ]
    if not clauses:
        return []
    rows = connection.execute(
        select(sr.c.resource_type, sr.c.param, sr.c.target_type, sr.c.target_id, sr.c.url).where(
            or_(*clauses)
        )
    )
    local_prefix = ctx.base_url + "/"
    found: list[Key] = []
    for source_type, param, target_type, target_id, url in rows:
        if target_id is None or "$" in param or (url is not None and not url.startswith(local_prefix)):
            continue  # not a resource here, or a composite's component row
        for spec in specs:
            if (
                _spec_applies(spec, source_type)
                and spec.param in (None, param)
                and spec.target_type in (None, target_type)
            ):
                found.append((target_type, target_id))
                break
    return sorted(found)


def _reverse_sources(
    connection: Connection, specs: list[IncludeSpec], by_type: dict[str, list[str]], ctx: MatchContext
) -> list[Key]:
    """Resources that refer to the frontier through the specified `Type:param`."""
    sr = Aliases()(search_reference)
    targets = [
        and_(sr.c.target_type == t, sr.c.target_id.in_(ids))
        for t, ids in by_type.items()
        if any(s.target_type in (None, t) for s in specs)
    ]
    if not targets:
        return []
    where: list[Any] = [or_(*targets), local_reference(sr, ctx)]
    if all(s.source_type is not None for s in specs):
        where.append(
            or_(
                *(
                    and_(sr.c.resource_type == s.source_type, sr.c.param == s.param)
                    if s.param is not None
                    else sr.c.resource_type == s.source_type
                    for s in specs
                )
            )
        )
    rows = connection.execute(
        select(sr.c.resource_type, sr.c.resource_id, sr.c.param, sr.c.target_type).where(*where)
    )
    found: list[Key] = []
    for source_type, source_id, param, target_type in rows:
        if "$" in param:
            continue
        for spec in specs:
            if (
                _spec_applies(spec, source_type)
                and spec.param in (None, param)
                and spec.target_type in (None, target_type)
            ):
                found.append((source_type, source_id))
                break
    return sorted(found)
