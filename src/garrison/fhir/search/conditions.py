"""Turn parsed filters into SQL conditions over a `resource` alias.

Every filter becomes either `r.id IN (SELECT resource_id FROM search_x WHERE resource_type = :t AND
param = :p AND ...)` or a correlated `EXISTS (...)` on the same index rows. Exactly one positive
filter per query level (the most selective by a fixed ranking) is written as IN so the database
starts from its index lookup; the others are EXISTS probes through the per-resource index, which
costs a few row reads per candidate. PostgreSQL plans both forms as semi-joins; SQLite follows
the shape it is given, which is why the shape matters.

Joining the other filters' index rows to the driving lookup inside the IN was tried: it read
fewer rows for `patient&code`, but on PostgreSQL with stale statistics (a freshly filled table)
a four-way join of index tables ran for minutes where the probes take milliseconds. Each probe's
cost is bounded by the candidate count whatever the estimates say; a join order is not.

When the driver is a reference to given patients (`patient=X`, `subject=Patient/X`), the other
filters are checked inside the driving lookup instead, on each of the patient's index rows, so
that only matching resources have their rows read (`_patient_driver`). Each check is fenced
(`OFFSET 0`) so that it stays a probe per index row: unfenced, PostgreSQL pulls the probes up into
joins, which doubled planning, and with a test database's stale statistics a join order ran for
minutes. A fence fixes the order, which suits a patient's resources of one type (hundreds, rarely
thousands) but not larger drivers: fenced probes under a Schedule's Slots took a scheduling test
13-33 s instead of a few, where the planner's own order (hash joins) is needed. Measured for
`Observation?patient&code&_sort=-date` at 1,000 patients, the statement as run by the search: 2.1-2.5
against 3.5-3.8 ms on PostgreSQL, 0.5-0.6 against 1.0-1.15 ms on SQLite.

A token filter beside `patient=X` drives instead: token rows carry the Patients of their
resource's `patient` parameter (`schema.search_token`), so the candidates are one index range,
and the patient filter is the probe, on a handful of rows instead of every one of the patient's
rows of that type (for a Synthea patient at 1,000 patients, PostgreSQL's execution 0.5-0.6
against 1.2-1.4 ms; `_patients_token`).

Chains (https://hl7.org/fhir/R4/search.html#chaining) and reverse chains (`_has`,
https://hl7.org/fhir/R4/search.html#has) nest the same construction one level down.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    false,
    literal_column,
    or_,
    select,
    tuple_,
)

from garrison.db.schema import INDEX_TABLES, resource, search_reference
from garrison.errors import BadRequest
from garrison.fhir.definitions import SearchParam
from garrison.fhir.search.aliases import Aliases, column_equals
from garrison.fhir.search.indexer import NOT_INDEXED, OF_TYPE_SUFFIX, PATIENT_PARAM
from garrison.fhir.search.parse import ChainFilter, Filter, HasFilter, SimpleFilter, split_unescaped, unescape
from garrison.fhir.search.predicates import (
    Match,
    MatchContext,
    any_of,
    date_sql,
    local_reference,
    match_sql,
    parse_date,
    plan_date,
    plan_match,
)

# Lower ranks are expected to select fewer rows and are preferred as the driving lookup.
_RANK = {
    "reference": 10,
    "token": 20,
    "uri": 30,
    "composite": 30,
    "string": 40,
    "number": 60,
    "quantity": 60,
    "date": 60,
}
# A chain usually pins the resource to a few targets (an identifier, a name), more tightly than a
# code shared by thousands; a reverse chain usually less so.
_CHAIN_RANK = 15
# An identifier names one resource, a reference all of a patient's or a Schedule's: on SQLite,
# which follows the shape it is given, `Slot?schedule=S&identifier=I` read every Slot of S.
_IDENTIFIER_RANK = 5
_HAS_RANK = 50
# A token with a handful of values (`status=final`, `gender`, `active`) matches a large share of
# its type: starting `patient=X&status=final&code=C` from status read about every row of the
# patient's, 4.5 against 3.3 ms from `code` (in process, PostgreSQL, 1,000 patients).
_FEW_VALUED_RANK = 45


# What a caller may see of a type: a condition on its rows (aliased as given), None for all of them
# (`Guard.inner_visible`).
Visibility = Callable[[str, Any, Aliases], ColumnElement[bool] | None]

# The type(s) a condition applies to: one resource type, or several at once for the parameters
# every type shares (_tag, _profile...), which then need no per-type copy of the condition.
Scope = str | tuple[str, ...]
# Parameters defined on Resource itself: the same for every type (https://hl7.org/fhir/R4/resource.html#search).
RESOURCE_LEVEL_PARAMS = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"})


@dataclass
class _Rows:
    """Index rows identifying matching resources: `id_col` holds the matching resource's id."""

    source: Any  # a FROM clause: an index-table alias or a join of several
    id_col: Any
    where: list[ColumnElement[bool]] = field(default_factory=list)
    negate: bool = False  # the resource matches when NO such row exists
    type_col: Any = None  # the matching resource's type, when the scope is several types

    def select_ids(self) -> Select[Any]:
        return select(self.id_col).select_from(self.source).where(*self.where)


class Bindings:
    """The values of a search's filters, decided before its statement is built, and the name each
    is bound under. A statement built with bindings binds named placeholders (carrying the values),
    so its compiled text serves every search of the same `shape` (see fhir/search/statements.py);
    a builder without bindings binds the values themselves."""

    def __init__(self, ctx: MatchContext) -> None:
        self.ctx = ctx
        self.values: dict[str, Any] = {}
        self._matches: dict[int, list[list[Match]]] = {}  # id of a filter -> per value, per component
        self._names: dict[tuple[int, int, int], str] = {}  # (id of a filter, value, component) -> name

    def shape(self, flt: Filter) -> Hashable:
        """What of `flt` decides the SQL built for it (never a bound value); records its values."""
        if isinstance(flt, ChainFilter):
            targets = tuple((target, self.shape(inner)) for target, inner in flt.targets)
            return ("chain", flt.param.code, targets)
        if isinstance(flt, HasFilter):
            return ("has", flt.source_type, flt.param.code, self.shape(flt.inner))
        matches = value_matches(flt, self.ctx)
        self._matches[id(flt)] = matches
        for value_index, components in enumerate(matches):
            for component_index, match in enumerate(components):
                name = f"v{len(self._names)}"
                self._names[(id(flt), value_index, component_index)] = name
                self.values.update((f"{name}_{i}", value) for i, value in enumerate(match.values))
        forms = tuple(tuple((m.kind, m.form) for m in components) for components in matches)
        missing = _finds_missing(flt)
        return ("simple", flt.param.code, flt.param.type, flt.modifier, missing, _names_patients(flt), forms)

    def compartment_owner(self, owner_id: str) -> Any:
        """The id of the compartment's owner (`Patient/{id}/Observation`), bound like a filter's value."""
        self.values["compartment_owner"] = owner_id
        return bindparam("compartment_owner", owner_id)

    def matches(self, flt: SimpleFilter) -> list[list[Match]] | None:
        return self._matches.get(id(flt))

    def bound(self, flt: SimpleFilter, value_index: int, component_index: int, match: Match) -> list[Any]:
        name = self._names[(id(flt), value_index, component_index)]
        return [bindparam(f"{name}_{i}", value) for i, value in enumerate(match.values)]


def value_matches(flt: SimpleFilter, ctx: MatchContext) -> list[list[Match]]:
    """Each value of `flt` decided (for a composite, each component of each value); BadRequest
    for a malformed one. `:missing` binds nothing."""
    param, modifier = flt.param, flt.modifier
    if param.type == "composite" and not param.components:
        raise BadRequest(f"{flt.name}: composite parameter {param.code} has no components")
    if modifier == "missing":
        return []
    if param.code == "_id":
        return [[Match("id", (), (unescape(value),))] for value in flt.values]
    if param.code == "_lastUpdated":
        # last_updated is 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00': the bounds take the same zone.
        return [[plan_date(parse_date(unescape(v), flt.name), ctx=ctx, suffix="+00:00")] for v in flt.values]
    if param.type == "composite":
        # https://hl7.org/fhir/R4/search.html#composite: components are `$`-separated.
        decided = []
        for value in flt.values:
            parts = split_unescaped(value, "$")
            if len(parts) != len(param.components):
                raise BadRequest(
                    f"{flt.name}: expected {len(param.components)} $-separated components, not {value!r}"
                )
            decided.append(
                [
                    plan_match(c.type, part, modifier=None, ctx=ctx, name=flt.name)
                    for c, part in zip(param.components, parts, strict=True)
                ]
            )
        return decided
    if param.type not in INDEX_TABLES:
        raise BadRequest(f"{flt.name}: parameters of type {param.type} cannot be searched")
    kind_modifier = None if modifier in ("not",) else modifier
    return [[plan_match(param.type, v, modifier=kind_modifier, ctx=ctx, name=flt.name)] for v in flt.values]


def composite_param_code(code: str, index: int) -> str:
    """Index rows of component `index` (0-based) of composite `code` use this param name."""
    return f"{code}${index}"


def of_type_param_code(code: str) -> str:
    """Index rows answering `identifier:of-type` use this param name."""
    return code + OF_TYPE_SUFFIX


class ConditionBuilder:
    """Builds the conditions of one statement (its aliases are numbered per statement)."""

    def __init__(
        self,
        ctx: MatchContext,
        aliases: Aliases | None = None,
        bindings: Bindings | None = None,
        few_valued: frozenset[tuple[str, str]] = frozenset(),
        visible: Visibility | None = None,
    ) -> None:
        """`few_valued`: (resource type, code) of token parameters with a handful of values
        (`Indexer.few_valued_tokens`), which a search should not start from. `visible`: for a
        caller who sees only some records, what chains and `_has` may match through (the
        resources the caller could find themselves); None when they see everything."""
        self.ctx = ctx
        self.alias = aliases or Aliases()
        self.bindings = bindings
        self.few_valued = few_valued
        self.visible = visible

    # -- public -------------------------------------------------------------------------------

    def conditions(
        self, resource_type: Scope, filters: list[Filter], res: Any, *, drive: bool = True
    ) -> list[ColumnElement[bool]]:
        """The conditions (ANDed) for `filters` on resources of `resource_type` aliased `res`.
        With `drive` False every filter is a probe: something else (the caller's own record)
        is where the search starts.

        A tuple of types is allowed when every filter is a RESOURCE_LEVEL_PARAMS one."""
        ranks = {id(f): _rank(f, self.few_valued) for f in filters} if drive else {}
        candidates = (f for f in filters if ranks.get(id(f)) is not None)
        driver = min(candidates, key=lambda f: ranks[id(f)] or 0, default=None)
        if isinstance(driver, SimpleFilter) and isinstance(resource_type, str) and _names_patients(driver):
            others = [f for f in filters if f is not driver]
            inside = [f for f in others if isinstance(f, SimpleFilter) and f.param.code not in NOT_INDEXED]
            if inside:
                outside = [f for f in others if all(f is not g for g in inside)]
                return [
                    self._patient_driver(driver, inside, resource_type, res),
                    *(self.condition(f, resource_type, res, driver=False) for f in outside),
                ]
        return [self.condition(f, resource_type, res, driver=f is driver) for f in filters]

    def compartment_condition(
        self, resource_type: str, compartment: tuple[str, str], params: tuple[str, ...], res: Any
    ) -> ColumnElement[bool]:
        """https://hl7.org/fhir/R4/compartmentdefinition.html: a resource is in the compartment
        of C/id if one of the compartment's parameters for its type refers to C/id; `{def}` (and
        the owner's own type) means the owner itself."""
        compartment_type, owner_id = compartment
        owner = owner_id if self.bindings is None else self.bindings.compartment_owner(owner_id)
        references = [p for p in params if p != "{def}"]
        conditions: list[ColumnElement[bool]] = []
        if references:
            sr = self.alias(search_reference)
            rows = _Rows(
                sr,
                sr.c.resource_id,
                [
                    sr.c.resource_type == resource_type,
                    (
                        sr.c.param.in_(references)
                        if len(references) > 1
                        else column_equals(sr, "param", references[0])
                    ),
                    sr.c.target_type == compartment_type,
                    sr.c.target_id == owner,
                    local_reference(sr, self.ctx),
                ],
            )
            conditions.append(res.c.id.in_(rows.select_ids()))
        if "{def}" in params or resource_type == compartment_type:
            conditions.append(res.c.id == owner)
        if not conditions:
            return false()
        return conditions[0] if len(conditions) == 1 else or_(*conditions)

    def matching_ids(self, resource_type: str, flt: Filter) -> Select[Any]:
        """SELECT of the ids of current resources of `resource_type` matching `flt` (for a chain
        or `_has`), among those the caller may see: matching through a withheld resource would
        tell what it says."""
        inner = self.alias(resource) if self.visible is not None else None
        seen = self.visible(resource_type, inner, self.alias) if self.visible is not None else None
        if seen is None:
            rows = self._rows(flt, resource_type)
            if rows is not None and not rows.negate:
                # Deleted resources have no index rows, so a positive match needs no resource row.
                return rows.select_ids()
        inner = inner if inner is not None else self.alias(resource)
        where = [
            inner.c.resource_type == resource_type,
            inner.c.deleted == false(),
            self.condition(flt, resource_type, inner, driver=True),
        ]
        return select(inner.c.id).where(*where, *([seen] if seen is not None else []))

    def condition(self, flt: Filter, resource_type: Scope, res: Any, *, driver: bool) -> ColumnElement[bool]:
        if isinstance(flt, SimpleFilter):
            special = self._resource_column_condition(flt, res)
            if special is not None:
                return special
        rows = self._rows(flt, resource_type)
        assert rows is not None
        several = not isinstance(resource_type, str)
        if driver and not rows.negate:
            if several:
                return tuple_(res.c.resource_type, res.c.id).in_(
                    select(rows.type_col, rows.id_col).select_from(rows.source).where(*rows.where)
                )
            return res.c.id.in_(rows.select_ids())  # type: ignore[no-any-return]
        correlation = [rows.id_col == res.c.id]
        if several:
            correlation.append(rows.type_col == res.c.resource_type)
        return _probe(rows, correlation)

    def _patient_driver(
        self, driver: SimpleFilter, inside: list[SimpleFilter], resource_type: str, res: Any
    ) -> ColumnElement[bool]:
        """`driver` (a reference to a patient) as the IN, with the other filters checked inside it
        on each of the patient's index rows, before that resource's row is read. Each check is
        fenced (OFFSET 0) so that it stays a probe per row: unfenced, PostgreSQL pulls them up
        into joins that cost more to plan than to run."""
        token = _patients_token(driver, inside, self._matches(driver), self.few_valued)
        if token is None:
            rows = self._rows(driver, resource_type)
            own: list[ColumnElement[bool]] = []
            checked = inside
        else:
            # A token filter's rows carry the patient (schema.search_token): the candidates are
            # the patient's rows of that token, one index range. `driver` is still checked on
            # each, as written: the column holds every target of the `patient` parameter, local
            # or not, so it only narrows.
            rows = self._rows(token, resource_type)
            assert rows is not None
            patients = [self._bound(driver, i, 0, m)[0] for i, (m,) in enumerate(self._matches(driver))]
            patient = rows.source.c.patient
            own = [patient == patients[0] if len(patients) == 1 else patient.in_(patients)]
            checked = [driver, *(f for f in inside if f is not token)]
        assert rows is not None and not rows.negate
        checks: list[ColumnElement[bool]] = []
        for flt in checked:
            probe_rows = self._rows(flt, resource_type)
            assert probe_rows is not None
            checks.append(_probe(probe_rows, [probe_rows.id_col == rows.id_col], fenced=True))
        candidates = select(rows.id_col).select_from(rows.source).where(*rows.where, *own, *checks)
        return res.c.id.in_(candidates)  # type: ignore[no-any-return]

    # -- per filter kind ----------------------------------------------------------------------

    def _resource_column_condition(self, flt: SimpleFilter, res: Any) -> ColumnElement[bool] | None:
        """_id and _lastUpdated are columns of `resource`, not index rows."""
        code = flt.param.code
        if code == "_id":
            ids = [self._bound(flt, i, 0, m)[0] for i, (m,) in enumerate(self._matches(flt))]
            return res.c.id == ids[0] if len(ids) == 1 else res.c.id.in_(ids)  # type: ignore[no-any-return]
        if code == "_lastUpdated":
            col = res.c.last_updated
            matches = self._matches(flt)
            bounds = [date_sql(col, col, m.form, self._bound(flt, i, 0, m)) for i, (m,) in enumerate(matches)]
            return any_of(bounds)
        return None

    def _matches(self, flt: SimpleFilter) -> list[list[Match]]:
        decided = self.bindings.matches(flt) if self.bindings is not None else None
        return value_matches(flt, self.ctx) if decided is None else decided

    def _bound(
        self, flt: SimpleFilter, value_index: int, component_index: int, match: Match
    ) -> Sequence[Any]:
        """What the SQL of one value binds: its values, or named placeholders carrying them."""
        if self.bindings is None:
            return match.values
        return self.bindings.bound(flt, value_index, component_index, match)

    def _rows(self, flt: Filter, resource_type: Scope) -> _Rows | None:
        if isinstance(flt, ChainFilter):
            assert isinstance(resource_type, str)
            return self._chain_rows(flt, resource_type)
        if isinstance(flt, HasFilter):
            assert isinstance(resource_type, str)
            return self._has_rows(flt, resource_type)
        if flt.param.code in NOT_INDEXED:
            return None
        if flt.param.type == "composite":
            return self._composite_rows(flt, resource_type)
        param, modifier = flt.param, flt.modifier
        matches = self._matches(flt)  # first: a malformed value is a BadRequest
        t = self.alias(INDEX_TABLES[param.type])
        code = of_type_param_code(param.code) if modifier == "of-type" else param.code
        where: list[ColumnElement[bool]] = [_of_type(t, resource_type), column_equals(t, "param", code)]
        if modifier == "missing":
            # https://hl7.org/fhir/R4/search.html#modifiers: missing=true finds resources
            # without any value for the parameter.
            return _Rows(t, t.c.resource_id, where, negate=_finds_missing(flt), type_col=t.c.resource_type)
        where.append(
            any_of([match_sql(t, m, self._bound(flt, i, 0, m), self.ctx) for i, (m,) in enumerate(matches)])
        )
        # :not = resources with no row matching the value (https://hl7.org/fhir/R4/search.html#token),
        # including those without the element at all.
        return _Rows(t, t.c.resource_id, where, negate=modifier == "not", type_col=t.c.resource_type)

    def _composite_rows(self, flt: SimpleFilter, resource_type: Scope) -> _Rows:
        # https://hl7.org/fhir/R4/search.html#composite: components must match values of the same
        # element (index rows sharing `grp`).
        param = flt.param
        matches = self._matches(flt)  # first: a malformed value is a BadRequest
        aliases = [self.alias(INDEX_TABLES[c.type]) for c in param.components]
        first = aliases[0]
        source: Any = first
        where: list[ColumnElement[bool]] = [
            _of_type(first, resource_type),
            column_equals(first, "param", composite_param_code(param.code, 0)),
        ]
        for index, alias in enumerate(aliases[1:], start=1):
            source = source.join(
                alias,
                and_(
                    alias.c.resource_type == first.c.resource_type,
                    alias.c.resource_id == first.c.resource_id,
                    alias.c.grp == first.c.grp,
                    column_equals(alias, "param", composite_param_code(param.code, index)),
                ),
            )
        if flt.modifier == "missing":
            return _Rows(
                first,
                first.c.resource_id,
                where,
                negate=_finds_missing(flt),
                type_col=first.c.resource_type,
            )
        alternatives = [
            and_(
                *(
                    match_sql(alias, m, self._bound(flt, i, j, m), self.ctx)
                    for j, (alias, m) in enumerate(zip(aliases, components, strict=True))
                )
            )
            for i, components in enumerate(matches)
        ]
        where.append(any_of(alternatives))
        return _Rows(source, first.c.resource_id, where, type_col=first.c.resource_type)

    def _chain_rows(self, flt: ChainFilter, resource_type: str) -> _Rows:
        sr = self.alias(search_reference)
        per_target = [
            and_(sr.c.target_type == target, sr.c.target_id.in_(self.matching_ids(target, inner)))
            for target, inner in flt.targets
        ]
        where = [
            sr.c.resource_type == resource_type,
            column_equals(sr, "param", flt.param.code),
            any_of(per_target),
            local_reference(sr, self.ctx),
        ]
        return _Rows(sr, sr.c.resource_id, where)

    def _has_rows(self, flt: HasFilter, resource_type: str) -> _Rows:
        sr = self.alias(search_reference)
        where = [
            sr.c.resource_type == flt.source_type,
            column_equals(sr, "param", flt.param.code),
            sr.c.target_type == resource_type,
            sr.c.resource_id.in_(self.matching_ids(flt.source_type, flt.inner)),
            local_reference(sr, self.ctx),
        ]
        return _Rows(sr, sr.c.target_id, where)


def _of_type(t: Any, resource_type: Scope) -> ColumnElement[bool]:
    if isinstance(resource_type, str):
        return column_equals(t, "resource_type", resource_type)
    return t.c.resource_type.in_(resource_type)  # type: ignore[no-any-return]


def _probe(
    rows: _Rows, correlation: list[ColumnElement[bool]], *, fenced: bool = False
) -> ColumnElement[bool]:
    """Whether a matching index row exists (or, for a negated filter, none does) for the resource
    `correlation` ties `rows` to. `fenced`: with OFFSET 0, which keeps PostgreSQL from pulling the
    probe up into a join (see `_patient_driver`)."""
    query: Select[Any] = select(literal_column("1")).select_from(rows.source).where(*correlation, *rows.where)
    probe = exists(query.offset(0) if fenced else query)
    return ~probe if rows.negate else probe


def _finds_missing(flt: SimpleFilter) -> bool:
    """`:missing=true`: resources without any value for the parameter."""
    return flt.modifier == "missing" and flt.values[0] == "true"


def names_patients(filters: Sequence[Filter]) -> bool:
    """Whether one of `filters` matches references to given patients only (`_names_patients`)."""
    return any(isinstance(f, SimpleFilter) and _names_patients(f) for f in filters)


def _names_patients(flt: SimpleFilter) -> bool:
    """Whether `flt` matches references to given patients only (`patient=X`, `subject=Patient/X`):
    a patient's resources of one type number in the hundreds, so checking the other filters on
    each before its row is read is cheap. A Schedule's Slots or a code's Observations can number
    in the tens of thousands; for those the planner's own order (hash joins) must stay possible."""
    if flt.param.type != "reference" or flt.modifier not in (None, "Patient"):
        return False
    if flt.modifier == "Patient" or flt.param.code == "patient":  # `patient` names patients on every type
        return True
    return all(unescape(value).startswith("Patient/") for value in flt.values)


def _patients_token(
    driver: SimpleFilter,
    inside: list[SimpleFilter],
    driver_matches: list[list[Match]],
    few_valued: frozenset[tuple[str, str]],
) -> SimpleFilter | None:
    """A filter of `inside` that can start a `patient=X` search from its token rows' `patient`
    column (schema.search_token): the most selective positive token filter (the first given
    among equals), when `driver` is the `patient` parameter naming resources by id. What
    decides this is part of the search's shape."""
    if driver.param.code != PATIENT_PARAM or not all(
        len(components) == 1 and components[0].form[0] in ("typed", "id") for components in driver_matches
    ):
        return None
    tokens = [f for f in inside if f.param.type == "token" and f.modifier not in ("not", "missing")]
    return min(tokens, key=lambda f: _rank(f, few_valued) or 0, default=None)


def _rank(flt: Filter, few_valued: frozenset[tuple[str, str]]) -> int | None:
    """How selective a filter is expected to be; None if it cannot drive the query."""
    if isinstance(flt, ChainFilter):
        return _CHAIN_RANK
    if isinstance(flt, HasFilter):
        return _HAS_RANK
    param: SearchParam = flt.param
    if flt.modifier == "not" or _finds_missing(flt):
        return None
    if flt.modifier == "missing":
        return 80
    if param.code == "_id":
        return 0
    if param.code == "_lastUpdated":
        return None  # a column of `resource`: already available to the scan
    if flt.modifier == "exact":
        return 30
    if param.code == "identifier" and param.type == "token" and flt.modifier in (None, "of-type"):
        return _IDENTIFIER_RANK
    if param.type == "token" and (param.resource_type, param.code) in few_valued:
        return _FEW_VALUED_RANK
    return _RANK.get(param.type, 70)
