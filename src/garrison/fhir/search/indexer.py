"""Search index extraction: the rows every search index table gets for one resource.

Every search parameter of the resource's type (from the official R4 SearchParameter
definitions) is evaluated and its values are turned into rows of the table for its type
(`garrison.db.schema.INDEX_TABLES`). Expressions are compiled once per (type, parameter): the
simple ones into direct accessors (`fastpaths`), the rest with fhirpathpy and its R4 model.

What the rows contain (the query side relies on this):

- Each row is a tuple (param, grp, *the table's value columns): the parameter code, the group
  and `index_rows.COLUMNS` (`ROW_FIELDS` names them); the repository adds resource_type and
  resource_id.
- Not indexed: `_id` and `_lastUpdated` (the resource table has them), parameters of type
  `special` and parameters without an expression (`_text`, `_content`, `_query`, `near`...).
  `_tag`, `_security`, `_profile` and `_source` are indexed from `meta`.
- string: `value` = normalize_string(text), `exact` = text as written. HumanName and Address
  give one row per part plus one for their text (or their parts joined by spaces).
- token: (system, code, text) - see `index_rows.token_values`. A CodeableConcept's own text
  has a row with NULL system and code. Booleans are "true"/"false".
- token `:of-type`: for every Identifier with a coded type, an extra token row with
  param `"<code>:of-type"` (e.g. `identifier:of-type`), system/code = the type coding's
  system/code and text = the identifier's value exactly as written (not normalised).
- date: [low, high] (`values.date_range`); Period open ends are MIN_DATE / MAX_DATE; Timing
  gives each event and its repeat.boundsPeriod.
- number/quantity: low/high/value from `values.number_range`; a Range spans its bounds (an
  open end is -inf/+inf) with its low value as `value`. Money: system urn:iso:std:iso:4217.
- reference: see `index_rows.ReferenceConverter` (relative -> target_type/target_id/version;
  absolute -> url plus the parsed tail; canonical -> url and `|version`; identifier columns).
- composite: for each element the composite expression selects, the component expressions
  are evaluated relative to it; component i's rows go to its own type's table with param
  `"<code>$<i>"` (e.g. `code-value-quantity$0`, `code-value-quantity$1`) and share a `grp`
  number unique within the resource (1, 2, ...). An element missing any component gives no
  rows. All other rows have grp 0.
- Rows are de-duplicated per (param, grp).

FHIRPath details: `resolve()` is not implemented by fhirpathpy, and search indexing never
follows references, so `resolve()` returns a stub `{resourceType, id}` taken from the
reference string (or Reference.type for a logical reference); `X.where(resolve() is Patient)`
then keeps the references whose type is Patient. `as` casts are evaluated as `ofType` filters
(`fastpaths.normalise_expression`). An expression that raises on odd data gives no rows for
that parameter and is counted in `Indexer.failures`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import FP_DateTime, ResourceNode
from fhirpathpy.models import models

from garrison.db.schema import INDEX_TABLES
from garrison.fhir.definitions import Definitions, SearchParam, split_union
from garrison.fhir.search.fastpaths import (
    Accessor,
    Node,
    TypeModel,
    build_type_model,
    compile_fast,
    normalise_expression,
    parse_reference,
    reference_target_type,
)
from garrison.fhir.search.index_rows import (
    COLUMNS,
    Converter,
    Values,
    converters,
    identifier_type_values,
)

log = logging.getLogger(__name__)

# Served from the resource table by the query side.
NOT_INDEXED = frozenset({"_id", "_lastUpdated"})
OF_TYPE_SUFFIX = ":of-type"
_ABSTRACT_ROOT = re.compile(r"^(?:Resource|DomainResource)\.")
TABLES = tuple(COLUMNS)


@dataclass(slots=True)
class IndexRows:
    # key: a schema.INDEX_TABLES key; each row is (param, grp, *the table's value columns), the
    # columns of `INDEX_COLUMNS` after resource_type and resource_id (and before search_token's
    # `patient`, which `tuples` adds). Tuples, not dicts: a Bundle writes thousands of rows.
    by_table: dict[str, list[tuple[Any, ...]]]
    # The rows as the tuples `index_tuples` gives, for the resource named in `_owner`.
    _tuples: dict[str, list[tuple[Any, ...]]] | None = field(default=None, compare=False, repr=False)
    _owner: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def count(self) -> int:
        return sum(len(rows) for rows in self.by_table.values())

    def dicts(self, key: str) -> list[dict[str, Any]]:
        """The rows of one table as dicts keyed by column name (for readers, not the write path)."""
        names = ROW_FIELDS[key]
        return [dict(zip(names, row, strict=True)) for row in self.by_table.get(key, ())]

    def tuples(self, resource_type: str, resource_id: str) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of the resource `resource_type/resource_id` per INDEX_TABLES key, in
        `INDEX_COLUMNS` order, made once: `prepare_version` makes them before the write lock."""
        owner = (resource_type, resource_id)
        if self._tuples is None or self._owner != owner:
            made: dict[str, list[tuple[Any, ...]]] = {}
            for key, table_rows in self.by_table.items():
                if table_rows:
                    if key == "token":
                        patients = self.patients()
                        made[key] = [owner + row + p for row in table_rows for p in patients]
                    else:
                        made[key] = [owner + row for row in table_rows]
            self._tuples, self._owner = made, owner
        return self._tuples

    def patients(self) -> list[tuple[str | None]]:
        """The `patient` column of the resource's token rows (`schema.search_token`): each id its
        `patient` parameter's reference rows hold, or one NULL when there is none."""
        found = dict.fromkeys(
            row[_TARGET_ID]
            for row in self.by_table.get("reference", ())
            if row[0] == PATIENT_PARAM and row[_TARGET_ID] is not None
        )
        return [(patient,) for patient in found] or [(None,)]


# The parameter whose references fill search_token.patient.
PATIENT_PARAM = "patient"


# The columns of each index table, in order: resource_type, resource_id, a row's fields and,
# for search_token, the `patient` column that `IndexRows.tuples` adds.
INDEX_COLUMNS = {key: tuple(c.name for c in table.columns) for key, table in INDEX_TABLES.items()}
assert INDEX_COLUMNS["token"][-1] == "patient", "IndexRows.tuples adds it last"
# The fields of an `IndexRows` row of each table: param, grp, then the value columns.
ROW_FIELDS = {key: columns[2:-1] if key == "token" else columns[2:] for key, columns in INDEX_COLUMNS.items()}
assert all(fields[:2] == ("param", "grp") for fields in ROW_FIELDS.values())
assert all(ROW_FIELDS[key][2:] == COLUMNS[key] for key in COLUMNS), "rows are (param, grp, *values)"
_TARGET_ID = ROW_FIELDS["reference"].index("target_id")


def index_tuples(owned: Iterable[tuple[str, str, IndexRows | None]]) -> dict[str, list[tuple[Any, ...]]]:
    """The index rows of many resources, given as (resource_type, id, rows), per INDEX_TABLES key
    and in `INDEX_COLUMNS` order: ready for `garrison.db.bulk.insert_tuples`."""
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for resource_type, resource_id, rows in owned:
        if rows is None:
            continue
        for key, table_rows in rows.tuples(resource_type, resource_id).items():
            by_table.setdefault(key, []).extend(table_rows)
    return by_table


class _FhirpathEvaluator:
    """The general engine for one expression: fhirpathpy with the R4 model, branch by branch.

    Union branches are evaluated separately because fhirpathpy's union drops the type of
    backbone elements, and the row builders need it.
    """

    __slots__ = ("functions",)

    def __init__(self, branches: list[str], options: dict[str, Any]) -> None:
        r4 = models["r4"]
        self.functions = [fhirpath_compile(branch, model=r4, options=options) for branch in branches]

    def __call__(self, nodes: list[Node], resource: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        variables = {"resource": resource}
        for node_type, data in nodes:
            context: Any = data if data is resource else _typed_node(data, node_type)
            for function in self.functions:
                out.extend(_as_node(item) for item in function(context, variables))
        return out


# fhirpathpy's node factory is unannotated; a typed alias keeps mypy strict elsewhere.
_typed_node = cast(Callable[[Any, str | None], Any], ResourceNode.create_node)


def _as_node(item: Any) -> Node:
    if isinstance(item, ResourceNode):
        path = item.path
        if path == "System.String":
            path = "string"
        if path is None and isinstance(item.data, dict):
            path = item.data.get("resourceType", "")
        return (path or "", item.data)
    if isinstance(item, bool):
        return ("boolean", item)
    if isinstance(item, int):
        return ("integer", item)
    if isinstance(item, float | Decimal):
        return ("decimal", item)
    if isinstance(item, str):
        return ("string", item)
    if isinstance(item, FP_DateTime):
        return ("dateTime", item.asStr)  # the text as written; str() reformats the zone
    return ("", item)


@dataclass(slots=True)
class _Expression:
    evaluate: Accessor
    fast: bool
    text: str
    # At least one of these keys must be in the context for a non-empty result (None: unknown).
    context_keys: tuple[str, ...] | None = None
    few_values: bool = False  # see FastExpression.few_values (False when not known)


@dataclass(slots=True)
class _Component:
    param: str  # "<code>$<i>"
    table: str
    convert: Converter
    expression: _Expression


@dataclass(slots=True)
class _Plan:
    code: str
    table: str  # an index table, or "composite"
    expression: _Expression
    convert: Converter | None
    components: tuple[_Component, ...] = ()


@dataclass(slots=True)
class IndexerStats:
    fast: int = 0
    fallback: int = 0
    skipped: int = 0
    uncompilable: list[str] = field(default_factory=list)


class Indexer:
    """Computes index rows; construct once per Definitions (`indexer_for`), then call `index`.

    `use_fast_paths=False` evaluates everything with fhirpathpy (tests compare the two).
    """

    def __init__(self, definitions: Definitions, *, use_fast_paths: bool = True) -> None:
        self.model: TypeModel = build_type_model(definitions.structure_definitions)
        self.converters = converters(definitions.resource_types)
        self.stats = IndexerStats()
        # (resource type, parameter code) -> evaluations that raised; see the module docstring.
        self.failures: Counter[tuple[str, str]] = Counter()
        self._use_fast = use_fast_paths
        self._options: dict[str, Any] = {
            "returnRawData": True,
            "userInvocationTable": {"resolve": {"fn": self._resolve}},
        }
        self._few_valued: set[tuple[str, str]] = set()
        self._plans: dict[str, list[_Plan]] = {}
        for resource_type in sorted(definitions.resource_types):
            plans = []
            for param in definitions.params_for(resource_type).values():
                plan = self._plan(resource_type, param)
                if plan is not None:
                    plans.append(plan)
            self._plans[resource_type] = plans
        # (resource type, code) of the token parameters with a handful of values (few_values).
        self.few_valued_tokens: frozenset[tuple[str, str]] = frozenset(self._few_valued)

    # --- compilation ------------------------------------------------------------------------------

    def _resolve(self, inputs: list[Any]) -> list[Any]:
        """fhirpathpy `resolve()`: a stub resource of the referenced type (see module docstring)."""
        out: list[Any] = []
        for value in inputs:
            target = reference_target_type(value, self.model.resource_types)
            if target is not None:
                reference = value.get("reference")
                parsed = (
                    parse_reference(reference, self.model.resource_types)
                    if isinstance(reference, str)
                    else None
                )
                stub = {"resourceType": target, "id": parsed.id if parsed else None}
                out.append(_typed_node(stub, None))
        return out

    def _compile(
        self, expression: str, context_types: frozenset[str], resource_type: str
    ) -> tuple[_Expression, frozenset[str]] | None:
        branches = split_union(normalise_expression(expression, self.model))
        if context_types == {resource_type}:
            # fhirpathpy only matches a root type name exactly: `Resource.meta.tag` on an
            # Observation selects nothing, so name the concrete type.
            branches = [_ABSTRACT_ROOT.sub(resource_type + ".", branch) for branch in branches]
        if self._use_fast:
            compiled = compile_fast(branches, context_types, resource_type, self.model)
            if compiled is not None:
                self.stats.fast += 1
                fast = _Expression(
                    compiled.accessor, True, expression, compiled.context_keys, compiled.few_values
                )
                return fast, compiled.types
        try:
            evaluator = _FhirpathEvaluator(branches, self._options)
        except Exception:  # the engine's parser raises plain Exceptions
            self.stats.uncompilable.append(f"{resource_type}: {expression}")
            return None
        self.stats.fallback += 1
        return _Expression(evaluator, False, expression), frozenset()

    def _plan(self, resource_type: str, param: SearchParam) -> _Plan | None:
        if param.code in NOT_INDEXED or param.type == "special" or not param.expression:
            self.stats.skipped += 1
            return None
        root = frozenset({resource_type})
        compiled = self._compile(param.expression, root, resource_type)
        if compiled is None:
            return None
        expression, element_types = compiled
        if param.type == "token" and expression.few_values:
            self._few_valued.add((resource_type, param.code))
        if param.type != "composite":
            if param.type not in self.converters:
                self.stats.skipped += 1
                return None
            return _Plan(param.code, param.type, expression, self.converters[param.type])
        components = []
        for position, component in enumerate(param.components):
            if component.type not in self.converters:
                return None
            # A component is evaluated on each element; without static types (fallback) it can
            # only use the general engine too.
            compiled_component = (
                self._compile(component.expression, element_types, resource_type)
                if element_types
                else self._compile_fallback_only(component.expression, resource_type)
            )
            if compiled_component is None:
                return None
            components.append(
                _Component(
                    f"{param.code}${position}",
                    component.type,
                    self.converters[component.type],
                    compiled_component[0],
                )
            )
        return _Plan(param.code, "composite", expression, None, tuple(components))

    def _compile_fallback_only(
        self, expression: str, resource_type: str
    ) -> tuple[_Expression, frozenset[str]] | None:
        use_fast, self._use_fast = self._use_fast, False
        try:
            return self._compile(expression, frozenset(), resource_type)
        finally:
            self._use_fast = use_fast

    def fast_path_report(self) -> dict[str, list[str]]:
        """Expressions by engine, for the benchmark and for tests."""
        report: dict[str, list[str]] = {"fast": [], "fallback": []}
        for resource_type, plans in self._plans.items():
            for plan in plans:
                expressions = [plan.expression, *(c.expression for c in plan.components)]
                for expression in expressions:
                    key = "fast" if expression.fast else "fallback"
                    report[key].append(f"{resource_type}.{plan.code}: {expression.text}")
        return report

    # --- evaluation -------------------------------------------------------------------------------

    def index(self, resource: dict[str, Any]) -> IndexRows:
        """All index rows for `resource` (a parsed FHIR JSON resource). Never raises on odd data."""
        by_table: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
        resource_type = resource.get("resourceType")
        plans = self._plans.get(resource_type) if isinstance(resource_type, str) else None
        if not plans:
            return IndexRows(by_table)
        assert isinstance(resource_type, str)
        root: list[Node] = [(resource_type, resource)]
        group = 0
        converted: _Converted = {}
        for plan in plans:
            keys = plan.expression.context_keys
            if keys is not None:
                # Most parameters select elements the resource does not have: skip them cheaply.
                for key in keys:
                    if key in resource:
                        break
                else:
                    continue
            try:
                nodes = plan.expression.evaluate(root, resource)
                if not nodes:
                    continue
                if plan.convert is not None:
                    self._add_rows(plan, nodes, by_table, converted)
                    continue
                for node in nodes:
                    grouped = self._component_rows(plan.components, node, resource, converted)
                    if grouped is None:
                        continue
                    group += 1
                    for component, values in grouped:
                        head = (component.param, group)
                        by_table[component.table].extend(head + v for v in values)
            except Exception:  # odd data must not stop a write; counted, see module docstring
                self.failures[(resource_type, plan.code)] += 1
                log.debug("index %s.%s failed", resource_type, plan.code, exc_info=True)
        return IndexRows(by_table)

    def _add_rows(
        self,
        plan: _Plan,
        nodes: list[Node],
        by_table: dict[str, list[tuple[Any, ...]]],
        converted: _Converted,
    ) -> None:
        assert plan.convert is not None
        convert = plan.convert
        if len(nodes) == 1:
            values = _convert(converted, convert, *nodes[0])
        else:
            values = []
            for node_type, data in nodes:
                values.extend(_convert(converted, convert, node_type, data))
        if len(values) > 1:
            values = list(dict.fromkeys(values))
        rows = by_table[plan.table]
        head = (plan.code, 0)
        for value in values:
            rows.append(head + value)
        if plan.table == "token":
            of_type = [
                v
                for node_type, data in nodes
                if node_type == "Identifier"
                for v in identifier_type_values(data)
            ]
            if of_type:
                head = (plan.code + OF_TYPE_SUFFIX, 0)
                rows.extend(head + v for v in dict.fromkeys(of_type))

    @staticmethod
    def _component_rows(
        components: tuple[_Component, ...], node: Node, resource: dict[str, Any], converted: _Converted
    ) -> list[tuple[_Component, list[Values]]] | None:
        grouped = []
        for component in components:
            values: list[Values] = []
            for node_type, data in component.expression.evaluate([node], resource):
                values.extend(_convert(converted, component.convert, node_type, data))
            if not values:
                return None
            grouped.append((component, list(dict.fromkeys(values))))
        return grouped


# The values each converter gave for each element of the resource being indexed, keyed by
# (converter, element type, element object), with the element kept so its id is not reused.
_Converted = dict[tuple[int, str, int], tuple[Any, list[Values]]]


def _convert(converted: _Converted, convert: Converter, node_type: str, data: Any) -> list[Values]:
    """`convert(node_type, data)`, once per element object: an Observation's code gives rows of
    `code`, `combo-code` and the first component of the `code-value-*` and `combo-code-value-*`
    composites, each from the same CodeableConcept
    (measured: 59-61 against 64 us to index a Synthea resource). Only objects are remembered:
    converting a primitive costs less than remembering it."""
    if type(data) is not dict:
        return convert(node_type, data)
    key = (id(convert), node_type, id(data))
    known = converted.get(key)
    if known is not None:
        return known[1]
    values = convert(node_type, data)
    converted[key] = (data, values)
    return values  # shared by every caller of this element: read, never changed in place


_INDEXERS: dict[int, tuple[Definitions, Indexer]] = {}
_INDEXERS_LOCK = threading.Lock()


def indexer_for(definitions: Definitions) -> Indexer:
    """The (cached) indexer for a set of definitions; compiling every expression takes a moment.

    Keyed by identity: Definitions holds dicts and is not hashable. The cache keeps the
    definitions alive, so an id is never reused while its entry exists.
    """
    with _INDEXERS_LOCK:
        cached = _INDEXERS.get(id(definitions))
        if cached is None or cached[0] is not definitions:
            cached = (definitions, Indexer(definitions))
            _INDEXERS[id(definitions)] = cached
        return cached[1]
