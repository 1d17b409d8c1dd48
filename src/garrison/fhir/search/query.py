"""FHIR search execution: parameters in, one page of matching resources out.

https://hl7.org/fhir/R4/search.html. The pieces: `parse` resolves parameter names against the R4
definitions; `conditions`/`predicates` turn filters into SQL over the search index tables;
`paging` sorts and cuts keyset pages; `includes` adds `_include`/`_revinclude` resources;
`bundle` renders the searchset Bundle. Everything is SQLAlchemy Core and runs the same on SQLite
and PostgreSQL.

Choices the spec leaves to the server:
- `_count` above `settings.max_page_size` is clamped to it (the self link shows the real size).
- `_total`: `none` gives no total; `estimate` and `accurate` (and the default) count exactly,
  without a second query when the first page holds every match.
- The default order is by resource type and id, which also makes paging stable.
- `_include:iterate` stops after `settings.max_include_depth` further rounds; the Bundle then
  carries an OperationOutcome warning (mode `outcome`). More than `settings.max_bundle_entries`
  included resources is TooCostly.
- Chains without a `:Type` follow every target type that defines the chained parameter.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, CursorResult, Select, and_, false, func, or_, select
from sqlalchemy.engine.interfaces import Dialect

from garrison.db.schema import resource
from garrison.errors import BadRequest
from garrison.fhir.definitions import Definitions
from garrison.fhir.resource import StoredResource
from garrison.fhir.search.aliases import Aliases, column_equals
from garrison.fhir.search.bundle import search_bundle
from garrison.fhir.search.conditions import RESOURCE_LEVEL_PARAMS, Bindings, ConditionBuilder, names_patients
from garrison.fhir.search.includes import fetch_included
from garrison.fhir.search.indexer import indexer_for
from garrison.fhir.search.paging import (
    Position,
    decode_cursor,
    encode_cursor,
    keyset_condition,
    order_by,
    sort_columns,
)
from garrison.fhir.search.parse import ParsedSearch, SearchParser, SimpleFilter
from garrison.fhir.search.predicates import MatchContext
from garrison.fhir.search.statements import CompiledStatement, ShapeCache
from garrison.settings import Settings

if TYPE_CHECKING:  # the guard builds search conditions itself, so it imports this package
    from garrison.fhir.authz.guard import Guard

log = logging.getLogger(__name__)

__all__ = [
    "PreparedSearch",
    "SearchPage",
    "SearchRequest",
    "SearchStatements",
    "execute_search",
    "find_matching_ids",
    "prepare_search",
    "search_bundle",
]


@dataclass(frozen=True)
class SearchRequest:
    resource_type: str | None  # None = whole-system search (honours _type)
    params: list[tuple[str, str]]  # raw (name, value) pairs as received
    compartment: tuple[str, str] | None = None  # ("Patient", "123") for GET /Patient/123/Observation
    # `Prefer: handling=lenient` (https://hl7.org/fhir/R4/search.html#errors): ignore unknown parameters.
    lenient: bool = False


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None = None
    cursor: str | None = None  # the cursor this page was fetched with
    accepted: list[tuple[str, str]] = field(default_factory=list)  # parameters as understood
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    warnings: list[str] = field(default_factory=list)
    # The definitions the search ran with; the Bundle needs them for _summary and _elements.
    definitions: Definitions | None = field(default=None, repr=False)


def _context(connection: Connection, definitions: Definitions, settings: Settings) -> MatchContext:
    return MatchContext(
        resource_types=definitions.resource_types,
        base_url=settings.base_url.rstrip("/"),
        dialect=connection.dialect.name,
        now=datetime.now(UTC).replace(tzinfo=None),
    )


def _filter_conditions(
    builder: ConditionBuilder,
    definitions: Definitions,
    parsed: ParsedSearch,
    compartment: tuple[str, str] | None,
    res: Any,
    *,
    guard: Guard | None,
) -> list[ColumnElement[bool]]:
    """The WHERE clause (ANDed) of a search over `res`: type, not deleted, compartment, filters,
    and what the caller may see."""
    restricted = guard is not None and not guard.unrestricted

    def type_conditions(resource_type: str) -> list[ColumnElement[bool]]:
        # A caller confined to one patient's record: the search starts from that record, unless
        # it names patients itself (`patient=X`), which starts it from at most that patient's rows
        # (from one index range, with a token filter). `visible` requires the record either way.
        filters = parsed.filters[resource_type]
        own_start = restricted and guard is not None and not names_patients(filters)
        start = guard.patient_driver(resource_type, res, builder.alias) if own_start and guard else None
        conditions = builder.conditions(resource_type, filters, res, drive=start is None)
        if start is not None:
            conditions.insert(0, start)
        if compartment is not None:
            params = definitions.compartments.get(compartment[0], {}).get(resource_type, ())
            conditions.append(builder.compartment_condition(resource_type, compartment, params, res))
        if restricted:
            assert guard is not None
            visible = guard.visible(resource_type, res, builder.alias, "search")
            if visible is not None:
                conditions.append(visible)
        return conditions

    where: list[ColumnElement[bool]] = [_current(res)]
    if len(parsed.types) == 1:
        where.append(column_equals(res, "resource_type", parsed.types[0]))
        where.extend(type_conditions(parsed.types[0]))
        return where
    if not parsed.types:
        where.append(false())
        return where
    everything = len(parsed.types) == len(definitions.resource_types)
    first = parsed.filters[parsed.types[0]]
    if _one_condition_for_all_types(parsed, compartment, restricted=restricted):
        # The type list stays even when it is every type: it lets the (type, id) key serve `_id`.
        if first or not everything:
            where.append(res.c.resource_type.in_(parsed.types))
        where.extend(builder.conditions(parsed.types, first, res))
        return where
    per_type: list[ColumnElement[bool]] = []
    unfiltered: list[str] = []
    for resource_type in parsed.types:
        conditions = type_conditions(resource_type)
        if conditions:
            per_type.append(and_(res.c.resource_type == resource_type, *conditions))
        else:
            unfiltered.append(resource_type)
    if unfiltered:
        per_type.append(res.c.resource_type.in_(unfiltered))
    where.append(or_(*per_type))
    return where


def _one_condition_for_all_types(
    parsed: ParsedSearch, compartment: tuple[str, str] | None, *, restricted: bool
) -> bool:
    """Whether a search of several types filters only on parameters every type shares (`_id`,
    `_lastUpdated`...), so that one condition serves all the types at once."""
    return (
        len(parsed.types) > 1
        and not restricted
        and compartment is None
        and all(
            isinstance(f, SimpleFilter) and f.param.code in RESOURCE_LEVEL_PARAMS
            for f in parsed.filters[parsed.types[0]]
        )
    )


@lru_cache(maxsize=64)
def _current(res: Any) -> ColumnElement[bool]:
    # Built once per alias (see aliases.column_equals).
    return res.c.deleted == false()  # type: ignore[no-any-return]


def _compartment_types(definitions: Definitions, request: SearchRequest) -> tuple[str, ...]:
    if request.compartment is None:
        return ()
    compartment_type = request.compartment[0]
    members = definitions.compartments.get(compartment_type)
    if members is None:
        raise BadRequest(f"{compartment_type} is not a compartment")
    types = set(members)
    types.add(compartment_type)
    if request.resource_type is not None and request.resource_type not in types:
        raise BadRequest(f"{request.resource_type} is not part of the {compartment_type} compartment")
    return tuple(sorted(types))


@dataclass(frozen=True, slots=True)
class PreparedSearch:
    """A parsed search and its statements, ready to run."""

    parsed: ParsedSearch
    ctx: MatchContext
    position: Position | None  # where a cursor's page starts or ends
    statements: SearchStatements
    values: Mapping[str, Any]  # what compiled statements bind for this search
    shape: Hashable | None  # None when the statements were built for this search alone


def prepare_search(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    request: SearchRequest,
    *,
    guard: Guard | None = None,
) -> PreparedSearch:
    """Parse a search and find or build its statements.

    A search gets the statements compiled for the first search of its shape
    (fhir/search/statements.py): its filters' shape and, for a caller who sees only some records,
    the shape of the caller's visibility conditions (`Guard.search_shape`), whose values are bound
    like the filters'. A search continuing from a cursor's position, or restricted by granular
    SMART scopes, gets statements built for it alone."""
    parser = SearchParser(definitions, settings, lenient=request.lenient)
    parsed = parser.parse(
        request.resource_type, request.params, compartment_types=_compartment_types(definitions, request)
    )
    if parsed.summary == "count":
        parsed.count = 0
    restricted = guard is not None and not guard.unrestricted
    if restricted:
        assert guard is not None
        # A whole-system search covers only the types the caller may search.
        parsed.types = tuple(guard.readable_types("search", parsed.types))
    ctx = _context(connection, definitions, settings)
    position = decode_cursor(parsed.cursor) if parsed.cursor else None
    caller = guard.search_shape() if restricted and guard is not None else ()
    bindings = None if caller is None or position is not None else Bindings(ctx)
    shape = None
    if bindings is not None:
        filters = _shape(
            ctx, connection.dialect.driver, parsed, request.compartment, bindings, restricted=restricted
        )
        shape = (filters, caller)
        if restricted and guard is not None:
            bindings.values.update(guard.bound_values())
    statements = _COMPILED.get(shape) if shape is not None else None
    if statements is None:
        statements = _build_statements(
            ctx, definitions, parsed, request.compartment, position=position, guard=guard, bindings=bindings
        )
        if shape is not None and bindings is not None:
            compiled = statements.compiled(connection.dialect, bindings.values.keys())
            if guard is not None and restricted and compiled.holds_any_of(guard.bound_values().values()):
                # A value of this caller's was written in as a constant, where the guard should
                # have bound it: shared, the statements would show another caller this one's view.
                log.error("search statements of shape %r hold a caller's value; not shared", shape)
            else:
                statements = compiled
                _COMPILED.put(shape, statements)
    values = bindings.values if bindings is not None else {}
    return PreparedSearch(parsed, ctx, position, statements, values, shape)


def execute_search(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    request: SearchRequest,
    *,
    guard: Guard | None = None,
) -> SearchPage:
    """Run a search and return one page of it (https://hl7.org/fhir/R4/search.html).

    Raises BadRequest for unknown parameters or malformed values, NotSupported for features
    Garrison lacks and TooCostly when a chain is deeper than `settings.max_chain_depth`.
    """
    prepared = prepare_search(connection, definitions, settings, request, guard=guard)
    parsed, position, statements = prepared.parsed, prepared.position, prepared.statements
    matches: list[StoredResource] = []
    next_position: Position | None = None
    previous_position: Position | None = None
    more = False
    forward = position is None or position.forward
    if statements.page is not None:
        rows: list[Any] = list(_run(connection, statements.page, prepared.values))
        more = len(rows) > parsed.count
        rows = rows[: parsed.count]
        if not forward:
            rows.reverse()
        # `deleted` comes as the driver gives it (0 on SQLite); a search finds current versions only.
        matches = [StoredResource(row[0], row[1], row[2], row[3], False, row[5]) for row in rows]
        if rows:
            first, last = rows[0], rows[-1]
            after_last = Position(True, tuple(last[6:]), last[0], last[1])
            before_first = Position(False, tuple(first[6:]), first[0], first[1])
            if forward:
                next_position = after_last if more else None
                previous_position = before_first if position is not None else None
            else:
                next_position = after_last
                previous_position = before_first if more else None

    total: int | None = None
    if parsed.total != "none" or parsed.summary == "count":
        if position is None and parsed.count > 0 and not more:
            total = len(matches)
        else:
            total = _run(connection, statements.count, prepared.values).scalar_one()

    warnings: list[str] = []
    included: list[StoredResource] = []
    if parsed.includes and matches:
        result = fetch_included(
            connection,
            parsed.includes,
            matches,
            prepared.ctx,
            max_depth=settings.max_include_depth,
            max_resources=settings.max_bundle_entries,
            admit=_admitter(connection, guard),
        )
        included = result.resources
        if result.truncated:
            warnings.append(
                f"_include:iterate stopped after {settings.max_include_depth} iterations; "
                "further resources were not included"
            )
    return SearchPage(
        matches=matches,
        included=included,
        total=total,
        next_cursor=encode_cursor(next_position) if next_position else None,
        previous_cursor=encode_cursor(previous_position) if previous_position else None,
        cursor=parsed.cursor,
        accepted=parsed.accepted,
        summary=parsed.summary,
        elements=parsed.elements,
        warnings=warnings,
        definitions=definitions,
    )


@dataclass(frozen=True, slots=True)
class SearchStatements:
    """A search's statements: built for one search, or compiled for every search of its shape."""

    page: Select[Any] | CompiledStatement | None  # one row more than the page; None for _count=0
    count: Select[Any] | CompiledStatement  # how many match

    def compiled(self, dialect: Dialect, placeholders: Collection[str]) -> SearchStatements:
        def compile_one(statement: Select[Any] | CompiledStatement) -> CompiledStatement:
            if isinstance(statement, CompiledStatement):
                return statement
            return CompiledStatement.of(statement, dialect, placeholders)

        page = compile_one(self.page) if self.page is not None else None
        return SearchStatements(page, compile_one(self.count))

    def holds_any_of(self, values: Iterable[Any]) -> bool:
        """Whether a compiled statement has one of `values` among its constants."""
        wanted = {v for v in values if isinstance(v, str)}
        statements = (s for s in (self.page, self.count) if isinstance(s, CompiledStatement))
        return any(isinstance(c, str) and c in wanted for s in statements for c in s.constants.values())


# Compiled statements per search shape, per process: a few dozen shapes cover an API's traffic.
_COMPILED: ShapeCache[SearchStatements] = ShapeCache(512)


def _shape(
    ctx: MatchContext,
    driver: str,
    parsed: ParsedSearch,
    compartment: tuple[str, str] | None,
    bindings: Bindings,
    *,
    restricted: bool,
) -> Hashable:
    """Everything of the search itself that decides its SQL (`driver`: the database driver, whose
    parameter style the compiled text is written in); `bindings` gets the values it binds."""
    # Filters that one condition serves for every type are decided once, not once per type.
    shared = _one_condition_for_all_types(parsed, compartment, restricted=restricted)
    shaped = parsed.types[:1] if shared else parsed.types
    filters = tuple((t, tuple(bindings.shape(f) for f in parsed.filters[t])) for t in shaped)
    if compartment is not None:
        bindings.compartment_owner(compartment[1])
    return (
        ctx.dialect,
        driver,
        ctx.base_url,
        parsed.types,
        filters,
        compartment[0] if compartment is not None else None,
        tuple(parsed.sort),
        parsed.count,
    )


def _build_statements(
    ctx: MatchContext,
    definitions: Definitions,
    parsed: ParsedSearch,
    compartment: tuple[str, str] | None,
    *,
    position: Position | None,
    guard: Guard | None,
    bindings: Bindings | None,
) -> SearchStatements:
    aliases = Aliases()
    restricted = guard is not None and not guard.unrestricted
    visible = guard.inner_visible if guard is not None and restricted else None
    builder = ConditionBuilder(ctx, aliases, bindings, indexer_for(definitions).few_valued_tokens, visible)
    res = aliases(resource)
    where = _filter_conditions(builder, definitions, parsed, compartment, res, guard=guard)
    count = select(func.count()).select_from(res).where(*where)
    if parsed.count <= 0:
        return SearchStatements(None, count)
    columns = sort_columns(parsed.sort, res, aliases)
    # The sort keys are selected too: the cursor records the last row's values.
    labels = [c.expr.label(f"k{i}") for i, c in enumerate(columns)]
    page = select(
        res.c.resource_type,
        res.c.id,
        res.c.version_id,
        res.c.last_updated,
        res.c.deleted,
        res.c.content,
        *labels,
    ).where(*where)
    forward = position is None or position.forward
    if position is not None:
        exprs = [c.expr for c in columns]
        page = page.where(
            keyset_condition(
                columns, exprs, res.c.resource_type, res.c.id, position, single_type=len(parsed.types) == 1
            )
        )
    by_label = [replace(c, expr=label) for c, label in zip(columns, labels, strict=True)]
    page = page.order_by(*order_by(by_label, res.c.resource_type, res.c.id, forward=forward))
    return SearchStatements(page.limit(parsed.count + 1), count)


def _run(
    connection: Connection, statement: Select[Any] | CompiledStatement, values: Mapping[str, Any]
) -> CursorResult[Any]:
    if isinstance(statement, CompiledStatement):
        return statement.execute(connection, values)
    return connection.execute(statement)


def _admitter(
    connection: Connection, guard: Guard | None
) -> Callable[[Sequence[tuple[str, str]]], list[tuple[str, str]]] | None:
    """For `_include`/`_revinclude`: keep only the keys the caller may see."""
    if guard is None or guard.unrestricted:
        return None
    checked = guard

    def admit(keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        by_type: dict[str, list[str]] = defaultdict(list)
        for resource_type, resource_id in keys:
            by_type[resource_type].append(resource_id)
        visible: set[tuple[str, str]] = set()
        for resource_type, ids in by_type.items():
            if checked.allows("read", resource_type):
                seen = checked.visible_ids(connection, resource_type, ids)
                visible.update((resource_type, i) for i in seen)
        return [k for k in keys if k in visible]

    return admit


def find_matching_ids(
    connection: Connection,
    definitions: Definitions,
    settings: Settings,
    resource_type: str,
    query: str,
    *,
    guard: Guard | None = None,
) -> list[str]:
    """Ids of current `resource_type` resources matching `query` (the url-encoded part after `?`).

    For conditional create/update/delete and conditional references
    (https://hl7.org/fhir/R4/http.html#cond-update). Only filter parameters are allowed; a query
    without any is a BadRequest, since it would match everything.
    """
    if resource_type not in definitions.resource_types:
        raise BadRequest(f"Unknown resource type {resource_type}")
    params = parse_qsl(query, keep_blank_values=True)
    filters = SearchParser(definitions, settings).parse_filters(resource_type, params)
    if not filters:
        raise BadRequest(f"The condition {query!r} has no search criteria")
    aliases = Aliases()
    restricted = guard is not None and not guard.unrestricted
    builder = ConditionBuilder(
        _context(connection, definitions, settings),
        aliases,
        few_valued=indexer_for(definitions).few_valued_tokens,
        visible=guard.inner_visible if guard is not None and restricted else None,
    )
    res = aliases(resource)
    conditions = builder.conditions(resource_type, filters, res)
    if guard is not None and not guard.unrestricted:
        visible = guard.visible(resource_type, res, aliases, "search")
        if visible is not None:
            conditions.append(visible)
    statement = (
        select(res.c.id)
        .where(res.c.resource_type == resource_type, res.c.deleted == false(), *conditions)
        .order_by(res.c.id)
    )
    return [row[0] for row in connection.execute(statement)]
