"""Parse raw FHIR search parameters into filters and result controls.

Parsing resolves every parameter name against the R4 definitions of the searched type, so the SQL
builder only ever sees known parameters. Values stay escaped (`\\,` `\\|` `\\$` `\\\\`) until the
type-specific code splits them (https://hl7.org/fhir/R4/search.html#escaping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from garrison.errors import BadRequest, NotSupported, TooCostly
from garrison.fhir.definitions import Definitions, SearchParam
from garrison.settings import Settings

# https://hl7.org/fhir/R4/search.html#modifiers: the modifiers Garrison implements per type.
_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text", "of-type"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "reference": frozenset({"missing", "identifier"}),  # plus :[Type]
    "uri": frozenset({"missing", "above", "below"}),
    "composite": frozenset({"missing"}),
}
# Result parameters that take a single value (https://hl7.org/fhir/R4/search.html#return).
_SINGLE_RESULT_PARAMS = frozenset({"_count", "_total", "_summary", "_elements", "_cursor", "_type"})
# Accepted and ignored here: the HTTP layer handles them (https://hl7.org/fhir/R4/http.html#parameters).
_IGNORED_PARAMS = frozenset({"_format", "_pretty"})
SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
TOTAL_MODES = frozenset({"none", "estimate", "accurate"})


def split_unescaped(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not escaped by a backslash; escapes are kept."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            current.append(char)
            current.append(next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """Remove search escapes: `\\,` `\\|` `\\$` and `\\\\` stand for the character itself."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        out.append(next(chars, "\\") if char == "\\" else char)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class SimpleFilter:
    """`code[:modifier]=v1,v2`: any of the comma-separated values matches."""

    name: str  # as given, for error messages
    param: SearchParam
    modifier: str | None
    values: tuple[str, ...]  # still escaped for | and $


@dataclass(frozen=True, slots=True)
class ChainFilter:
    """`ref[:Type].rest=v`: resources whose `ref` points at a resource matching `rest=v`."""

    name: str
    param: SearchParam  # a reference parameter of the searched type
    targets: tuple[tuple[str, Filter], ...]  # per target type, the chained filter on that type


@dataclass(frozen=True, slots=True)
class HasFilter:
    """`_has:Type:ref:rest=v`: resources referenced by a `Type` (through `ref`) matching `rest=v`."""

    name: str
    source_type: str
    param: SearchParam  # the reference parameter of source_type
    inner: Filter


Filter = SimpleFilter | ChainFilter | HasFilter


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str  # a parameter code, `_id` or `_lastUpdated`
    descending: bool
    param_type: str  # string | token | date | number | quantity | reference | uri | id | instant


@dataclass(frozen=True, slots=True)
class IncludeSpec:
    """`_include=Type:param[:Target]` or `_revinclude=...`; `param` None means `*`."""

    source_type: str | None  # None for a bare `*`
    param: str | None
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class ParsedSearch:
    types: tuple[str, ...]
    filters: dict[str, list[Filter]]  # per searched type
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    includes: list[IncludeSpec] = field(default_factory=list)
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    cursor: str | None = None
    # The parameters as understood, for the Bundle's self link (https://hl7.org/fhir/R4/search.html#conformance).
    accepted: list[tuple[str, str]] = field(default_factory=list)


class SearchParser:
    """Resolves raw parameter pairs against the definitions of the searched types."""

    def __init__(self, definitions: Definitions, settings: Settings, *, lenient: bool = False) -> None:
        self.definitions = definitions
        self.settings = settings
        self.lenient = lenient

    # -- entry points -------------------------------------------------------------------------

    def parse(
        self,
        resource_type: str | None,
        params: list[tuple[str, str]],
        *,
        compartment_types: tuple[str, ...] = (),
    ) -> ParsedSearch:
        """Parse a whole search. `resource_type` None means system (or compartment `*`) search."""
        seen_single: set[str] = set()
        filter_pairs: list[tuple[str, str]] = []
        result_pairs: list[tuple[str, str]] = []
        for name, value in params:
            base = name.split(":", 1)[0]
            if base in _IGNORED_PARAMS:
                continue
            if base in _SINGLE_RESULT_PARAMS:
                if base in seen_single:
                    raise BadRequest(f"Search parameter {base} may only be given once")
                seen_single.add(base)
            if base in _SINGLE_RESULT_PARAMS or base in ("_sort", "_include", "_revinclude"):
                result_pairs.append((name, value))
            elif base in ("_contained", "_containedType"):
                if value not in ("false", "container"):
                    raise NotSupported(f"Search parameter {name}={value} is not supported")
            else:
                filter_pairs.append((name, value))

        types = self._types(resource_type, dict(result_pairs).get("_type"), compartment_types)
        parsed = ParsedSearch(types=types, filters={t: [] for t in types})
        parsed.count = self.settings.default_page_size
        for name, value in filter_pairs:
            if value == "":
                continue  # an empty value places no constraint
            if self._add_filter(parsed, name, value):
                parsed.accepted.append((name, value))
        for name, value in result_pairs:
            self._result_param(parsed, name, value)
            if name != "_cursor":
                # The self link shows _count as clamped.
                parsed.accepted.append((name, str(parsed.count) if name == "_count" else value))
        if parsed.elements is not None and parsed.summary not in (None, "false"):
            raise BadRequest("_summary and _elements cannot be used together")
        return parsed

    def parse_filters(self, resource_type: str, params: list[tuple[str, str]]) -> list[Filter]:
        """Only the filter parameters of a query (conditional interactions); controls are rejected."""
        parsed = ParsedSearch(types=(resource_type,), filters={resource_type: []})
        for name, value in params:
            base = name.split(":", 1)[0]
            if base in _IGNORED_PARAMS or value == "":
                continue
            if (
                base.startswith("_")
                and base not in ("_id", "_lastUpdated", "_has")
                and (self.definitions.param(resource_type, base) is None)
            ):
                raise BadRequest(f"Search parameter {name} cannot be used in a conditional request")
            self._add_filter(parsed, name, value)
        return parsed.filters[resource_type]

    # -- filters ------------------------------------------------------------------------------

    def _types(
        self, resource_type: str | None, type_param: str | None, compartment: tuple[str, ...]
    ) -> tuple[str, ...]:
        if resource_type is not None:
            if resource_type not in self.definitions.resource_types:
                raise BadRequest(f"Unknown resource type {resource_type}")
            if type_param is not None:
                raise BadRequest("_type is only allowed in a whole-system or compartment search")
            return (resource_type,)
        allowed = compartment or tuple(sorted(self.definitions.resource_types))
        if type_param is None:
            return allowed
        requested: list[str] = []
        for item in type_param.split(","):
            name = item.strip()
            if name not in self.definitions.resource_types:
                raise BadRequest(f"_type: unknown resource type {name}")
            if name in allowed and name not in requested:
                requested.append(name)
        return tuple(requested)

    def _add_filter(self, parsed: ParsedSearch, name: str, value: str) -> bool:
        """Add the filter to every searched type; False if ignored (lenient mode, unknown name)."""
        built: dict[str, Filter] = {}
        for resource_type in parsed.types:
            try:
                built[resource_type] = self.filter(resource_type, name, value, depth=0)
            except _UnknownParameter as unknown:
                if self.lenient:
                    return False
                if len(parsed.types) > 1:
                    raise BadRequest(
                        f"Search parameter {name} is not defined for every searched type "
                        f"(not for {resource_type}); narrow the search with _type"
                    ) from None
                raise BadRequest(str(unknown)) from None
        for resource_type, flt in built.items():
            parsed.filters[resource_type].append(flt)
        return True

    def filter(self, resource_type: str, name: str, value: str, *, depth: int) -> Filter:
        """Parse one filter parameter `name=value` as it applies to `resource_type`."""
        if name.startswith("_has:"):
            return self._has(resource_type, name, value, depth)
        if "." in name:
            return self._chain(resource_type, name, value, depth)
        code, _, modifier = name.partition(":")
        param = self.definitions.param(resource_type, code)
        if param is None:
            raise _UnknownParameter(f"Unknown search parameter {code!r} for resource type {resource_type}")
        if param.type == "special" or (param.expression is None and code not in ("_id", "_lastUpdated")):
            raise NotSupported(f"Search parameter {code} is not supported")
        if modifier:
            self._check_modifier(param, modifier, name)
            if modifier == "missing" and value not in ("true", "false"):
                raise BadRequest(f"{name}: the value must be true or false")
        values = tuple(v for v in split_unescaped(value, ",") if v != "")
        if not values:
            raise BadRequest(f"{name}: no value given")
        if code == "_id" and modifier not in ("", None):
            raise BadRequest(f"{name}: _id takes no modifier")
        return SimpleFilter(name=name, param=param, modifier=modifier or None, values=values)

    def _check_modifier(self, param: SearchParam, modifier: str, name: str) -> None:
        if param.type == "reference" and modifier in self.definitions.resource_types:
            if param.targets and modifier not in param.targets:
                raise BadRequest(f"{name}: {param.code} cannot refer to a {modifier}")
            return
        if param.code == "_lastUpdated" and modifier == "missing":
            raise BadRequest(f"{name}: every resource has _lastUpdated")
        allowed = _MODIFIERS.get(param.type, frozenset())
        if modifier not in allowed:
            raise BadRequest(f"{name}: modifier :{modifier} is not supported on a {param.type} parameter")

    def _chain(self, resource_type: str, name: str, value: str, depth: int) -> ChainFilter:
        if depth + 1 > self.settings.max_chain_depth:
            raise TooCostly(f"{name}: chains are limited to {self.settings.max_chain_depth} levels")
        head, rest = name.split(".", 1)
        code, _, type_modifier = head.partition(":")
        param = self.definitions.param(resource_type, code)
        if param is None:
            raise _UnknownParameter(f"Unknown search parameter {code!r} for resource type {resource_type}")
        if param.type != "reference":
            raise BadRequest(f"{name}: {code} is not a reference parameter and cannot be chained")
        if type_modifier:
            if type_modifier not in self.definitions.resource_types:
                raise BadRequest(f"{name}: unknown resource type {type_modifier}")
            if param.targets and type_modifier not in param.targets:
                raise BadRequest(f"{name}: {code} cannot refer to a {type_modifier}")
            candidates: tuple[str, ...] = (type_modifier,)
        else:
            candidates = tuple(t for t in param.targets if t in self.definitions.resource_types)
        targets: list[tuple[str, Filter]] = []
        errors: list[str] = []
        for target in candidates:
            try:
                targets.append((target, self.filter(target, rest, value, depth=depth + 1)))
            except _UnknownParameter as unknown:
                errors.append(str(unknown))
        if not targets:
            raise BadRequest(f"{name}: " + ("; ".join(errors) or f"{code} has no target types"))
        return ChainFilter(name=name, param=param, targets=tuple(targets))

    def _has(self, resource_type: str, name: str, value: str, depth: int) -> HasFilter:
        # https://hl7.org/fhir/R4/search.html#has: _has:Type:reference-param:search-param=value
        if depth + 1 > self.settings.max_chain_depth:
            raise TooCostly(f"{name}: _has is limited to {self.settings.max_chain_depth} levels")
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise BadRequest(f"{name}: expected _has:Type:reference-parameter:search-parameter")
        _, source_type, code, rest = parts
        if source_type not in self.definitions.resource_types:
            raise BadRequest(f"{name}: unknown resource type {source_type}")
        param = self.definitions.param(source_type, code)
        if param is None or param.type != "reference":
            raise BadRequest(f"{name}: {code} is not a reference parameter of {source_type}")
        if param.targets and resource_type not in param.targets:
            raise BadRequest(f"{name}: {source_type}.{code} cannot refer to a {resource_type}")
        inner = self.filter(source_type, rest, value, depth=depth + 1)
        return HasFilter(name=name, source_type=source_type, param=param, inner=inner)

    # -- result parameters --------------------------------------------------------------------

    def _result_param(self, parsed: ParsedSearch, name: str, value: str) -> None:
        base, _, modifier = name.partition(":")
        if base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise BadRequest(f"{name}: unknown modifier :{modifier}")
            parsed.includes.append(self._include(base, value, iterate=bool(modifier)))
            return
        if modifier:
            raise BadRequest(f"{name}: {base} takes no modifier")
        if base == "_count":
            if not value.isdigit():
                raise BadRequest(f"_count must be a non-negative integer, not {value!r}")
            # A larger page than allowed is clamped: the spec lets the server return fewer
            # (https://hl7.org/fhir/R4/search.html#count); the self link shows the real size.
            parsed.count = min(int(value), self.settings.max_page_size)
        elif base == "_sort":
            for item in value.split(","):
                parsed.sort.append(self._sort_key(parsed.types, item.strip()))
        elif base == "_total":
            if value not in TOTAL_MODES:
                raise BadRequest(f"_total must be one of none, estimate, accurate, not {value!r}")
            parsed.total = value
        elif base == "_summary":
            if value not in SUMMARY_MODES:
                raise BadRequest(f"_summary must be one of true, text, data, count, false, not {value!r}")
            parsed.summary = value
        elif base == "_elements":
            parsed.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif base == "_cursor":
            parsed.cursor = value
        # _type was consumed while choosing the searched types.

    def _sort_key(self, types: tuple[str, ...], item: str) -> SortKey:
        descending = item.startswith("-")
        code = item[1:] if descending else item
        if not code:
            raise BadRequest("_sort: empty sort key")
        if code == "_id":
            return SortKey(code, descending, "id")
        if code == "_lastUpdated":
            return SortKey(code, descending, "instant")
        kinds = set()
        for resource_type in types:
            param = self.definitions.param(resource_type, code)
            if param is None:
                raise BadRequest(f"_sort: unknown search parameter {code!r} for {resource_type}")
            kinds.add(param.type)
        if len(kinds) != 1:
            raise BadRequest(f"_sort: {code} has different types across the searched resource types")
        kind = kinds.pop()
        if kind not in ("string", "token", "date", "number", "quantity", "reference", "uri"):
            raise BadRequest(f"_sort: cannot sort on the {kind} parameter {code}")
        return SortKey(code, descending, kind)

    def _include(self, base: str, value: str, *, iterate: bool) -> IncludeSpec:
        reverse = base == "_revinclude"
        if value == "*":
            return IncludeSpec(None, None, None, iterate, reverse)
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise BadRequest(f"{base}: expected Type:parameter[:TargetType], not {value!r}")
        source_type, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if source_type not in self.definitions.resource_types:
            raise BadRequest(f"{base}: unknown resource type {source_type}")
        if target is not None and target not in self.definitions.resource_types:
            raise BadRequest(f"{base}: unknown resource type {target}")
        if code == "*":
            return IncludeSpec(source_type, None, target, iterate, reverse)
        param = self.definitions.param(source_type, code)
        if param is None or param.type != "reference":
            raise BadRequest(f"{base}: {code} is not a reference parameter of {source_type}")
        if target is not None and param.targets and target not in param.targets:
            raise BadRequest(f"{base}: {source_type}.{code} cannot refer to a {target}")
        return IncludeSpec(source_type, code, target, iterate, reverse)


class _UnknownParameter(Exception):
    """A parameter name not defined for a type (an error unless the search is lenient)."""
