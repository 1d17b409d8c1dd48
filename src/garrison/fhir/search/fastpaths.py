"""Direct Python accessors for the simple FHIRPath expressions of the R4 search parameters.

Most search parameter expressions are plain paths (`Observation.code`), type filters
(`(Observation.value as Quantity)`), reference-type filters (`Observation.subject.where(resolve()
is Patient)`) or equality filters (`Patient.telecom.where(system='email')`). Evaluating them with a
general FHIRPath engine costs far more than reading the JSON directly, so they are compiled here
into small closures over the resource dict. Anything outside that subset returns None from
`compile_fast` and the caller falls back to fhirpathpy; tests check both agree on real data.

The evaluation result is a list of `Node`s: (FHIR type name, JSON value). The type name is what
fhirpathpy's R4 model reports (`CodeableConcept`, `dateTime`, a backbone element's path such as
`Observation.component`, or a resource type), so one row builder serves both engines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Node = tuple[str, Any]
# A step maps the current collection to the next one; the resource is there for `%resource`.
Step = Callable[[list[Node], dict[str, Any]], list[Node]]
Accessor = Callable[[list[Node], dict[str, Any]], list[Node]]

# Element types that stand for "some resource": the real type is the JSON's resourceType.
_ANY_RESOURCE = frozenset({"Resource", "DomainResource"})
_SYSTEM_STRING = "http://hl7.org/fhirpath/System.String"
_CHOICE = "[x]"

# https://hl7.org/fhir/R4/references.html#literal: [base/]Type/id[/_history/version]
_REFERENCE_TAIL = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)


@dataclass(frozen=True, slots=True)
class ParsedReference:
    type: str
    id: str
    version: str | None
    absolute: bool


@lru_cache(maxsize=4096)  # a patient's and an encounter's references recur in every resource
def parse_reference(reference: str, resource_types: frozenset[str]) -> ParsedReference | None:
    """Split a literal reference into type, id and version, if it names a known resource type.

    Relative references must be exactly `Type/id[/_history/v]`; absolute http(s) URLs are parsed
    from their tail (https://hl7.org/fhir/R4/references.html#literal). `#contained`, `urn:uuid:`
    and anything else return None.
    """
    absolute = reference.startswith(("http://", "https://"))
    match = _REFERENCE_TAIL.search(reference)
    if match is None or match.group("type") not in resource_types:
        return None
    if not absolute and match.start() != 0:
        return None
    return ParsedReference(match.group("type"), match.group("id"), match.group("version"), absolute)


def reference_target_type(value: Any, resource_types: frozenset[str]) -> str | None:
    """The resource type a Reference points at, as `resolve() is X` needs it, without a lookup.

    The literal reference decides; a logical reference (identifier only) falls back to
    Reference.type (https://hl7.org/fhir/R4/references.html#Reference). Contained (`#id`)
    references would need the container, which search indexing never follows.
    """
    if not isinstance(value, dict):
        return None
    reference = value.get("reference")
    if isinstance(reference, str):
        parsed = parse_reference(reference, resource_types)
        return parsed.type if parsed else None
    declared = value.get("type")
    return declared if isinstance(declared, str) and declared in resource_types else None


@dataclass(frozen=True, slots=True)
class TypeModel:
    """Element names and types of every R4 resource, datatype and backbone element."""

    # type key (type name or backbone path) -> element name -> ((JSON key, element type), ...)
    children: Mapping[str, Mapping[str, tuple[tuple[str, str], ...]]]
    bases: Mapping[str, str]  # type name -> base type name
    primitives: frozenset[str]
    resource_types: frozenset[str]
    # (type key, element name) of the elements with a required binding (a fixed set of codes)
    required_bindings: frozenset[tuple[str, str]] = frozenset()

    def is_a(self, type_name: str, ancestor: str) -> bool:
        current: str | None = type_name
        while current is not None:
            if current == ancestor:
                return True
            current = self.bases.get(current)
        return False

    def canonical_type(self, name: str) -> str | None:
        """A type name as the model knows it; `DateTime` (used by a few R4 parameters) -> `dateTime`."""
        if name in self.bases or name in self.children or name in self.primitives:
            return name
        lowered = name[:1].lower() + name[1:]
        return lowered if lowered in self.primitives else None


def build_type_model(structure_definitions: Mapping[str, dict[str, Any]]) -> TypeModel:
    children: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {}
    bases: dict[str, str] = {}
    primitives: set[str] = set()
    resource_types: set[str] = set()
    required: set[tuple[str, str]] = set()
    for type_name, sd in structure_definitions.items():
        base = sd.get("baseDefinition")
        if isinstance(base, str):
            bases[type_name] = base.rsplit("/", 1)[-1]
        if sd.get("kind") == "primitive-type":
            primitives.add(type_name)
            continue
        if sd.get("kind") == "resource":
            resource_types.add(type_name)
        for element in sd.get("snapshot", {}).get("element", []):
            path: str = element["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            codes = [t.get("code", "") for t in element.get("type", [])]
            if element.get("binding", {}).get("strength") == "required":
                required.add((parent, name.removesuffix(_CHOICE)))
            entry: tuple[tuple[str, str], ...]
            if name.endswith(_CHOICE):
                name = name[: -len(_CHOICE)]
                entry = tuple((name + code[:1].upper() + code[1:], code) for code in codes)
            elif "contentReference" in element:
                entry = ((name, element["contentReference"].lstrip("#")),)
            elif codes and codes[0] in ("BackboneElement", "Element"):
                entry = ((name, path),)
            elif codes:
                code = "string" if codes[0] == _SYSTEM_STRING else codes[0]
                entry = ((name, code),)
            else:
                continue
            children.setdefault(parent, {})[name] = entry
    return TypeModel(children, bases, frozenset(primitives), frozenset(resource_types), frozenset(required))


# --- expression rewriting shared with the fallback engine -----------------------------------------

_AS_OPERATOR = re.compile(r"\(([A-Za-z0-9_.%\[\]]+) as ([A-Za-z]+)\)")
_AS_FUNCTION = re.compile(r"\.(?:as|ofType)\(([A-Za-z]+)\)")


def normalise_expression(expression: str, model: TypeModel) -> str:
    """Rewrite type casts into filters both engines agree on.

    `as` is defined on singletons and fhirpathpy raises on a longer collection (two
    `useContext`s are enough), while search wants every matching element: `(X as T)` and
    `X.as(T)` become `X.ofType(T)`, as the R5 definitions were changed to read. R4 writes
    `value.as(DateTime)` for the FHIR `dateTime` type, which is normalised as well.
    """

    def type_name(name: str) -> str:
        return model.canonical_type(name) or name

    expression = _AS_OPERATOR.sub(lambda m: f"{m.group(1)}.ofType({type_name(m.group(2))})", expression)
    return _AS_FUNCTION.sub(lambda m: f".ofType({type_name(m.group(1))})", expression)


# --- parsing the simple subset --------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<index>\[\d+\])|(?P<string>'[^'\\]*')|(?P<ident>%?[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[().=]))"
)


class _Unsupported(Exception):
    """The expression is outside the fast subset; the caller uses the general engine."""


def _tokens(expression: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise _Unsupported(expression)
        tokens.append(match.group(match.lastgroup or "op"))
        position = match.end()
    return tokens


Op = tuple[str, ...]


def _parse(expression: str) -> list[Op]:
    """Ops of one union branch: root, child, oftype, resolve_is, where_eq, index."""
    tokens = _tokens(expression)
    ops: list[Op] = []
    pos = 0

    def expect(value: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != value:
            raise _Unsupported(expression)
        pos += 1

    def ident() -> str:
        nonlocal pos
        if pos >= len(tokens) or not re.fullmatch(r"%?[A-Za-z_]\w*", tokens[pos]):
            raise _Unsupported(expression)
        pos += 1
        return tokens[pos - 1]

    ops.append(("root", ident()))
    while pos < len(tokens):
        token = tokens[pos]
        if token.startswith("["):
            ops.append(("index", token[1:-1]))
            pos += 1
            continue
        expect(".")
        name = ident()
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            if name == "ofType":
                ops.append(("oftype", ident()))
            elif name == "where" and tokens[pos : pos + 4] == ["resolve", "(", ")", "is"]:
                pos += 4
                ops.append(("resolve_is", ident()))
            elif name == "where":
                field = ident()
                expect("=")
                literal = tokens[pos] if pos < len(tokens) else ""
                if not literal.startswith("'"):
                    raise _Unsupported(expression)
                pos += 1
                ops.append(("where_eq", field, literal[1:-1]))
            else:
                raise _Unsupported(expression)
            expect(")")
        else:
            ops.append(("child", name))
    return ops


# --- compiling ops into steps ---------------------------------------------------------------------


def _child_step(table: dict[str, tuple[tuple[str, str], ...]], covers_input: bool) -> Step:
    """Navigate to a child element; `table` maps each input type to its (JSON key, type)s.

    When every input type has the same single entry (the usual case, and `code` on both an
    Observation and its components), the input type need not be looked at.
    """
    dynamic = any(t in _ANY_RESOURCE for entries in table.values() for _, t in entries)
    distinct = set(table.values())
    if covers_input and len(distinct) == 1 and not dynamic:
        (only_entries,) = distinct
        if len(only_entries) == 1:
            ((key, out_type),) = only_entries

            def single(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
                out: list[Node] = []
                for _, data in nodes:
                    if type(data) is dict:
                        value = data.get(key)
                        if value is None:
                            continue
                        if type(value) is list:
                            out.extend((out_type, item) for item in value if item is not None)
                        else:
                            out.append((out_type, value))
                return out

            return single

    def general(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for node_type, data in nodes:
            if type(data) is not dict:
                continue
            for key, out_type in table.get(node_type, ()):
                value = data.get(key)
                if value is None:
                    continue
                for item in value if type(value) is list else (value,):
                    if item is None:
                        continue
                    if out_type in _ANY_RESOURCE and type(item) is dict:
                        out.append((item.get("resourceType", out_type), item))
                    else:
                        out.append((out_type, item))
        return out

    return general


def _filter_types(keep: frozenset[str]) -> Step:
    def step(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
        return [node for node in nodes if node[0] in keep]

    return step


def _resolve_is(target: str, resource_types: frozenset[str]) -> Step:
    def step(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
        return [node for node in nodes if reference_target_type(node[1], resource_types) == target]

    return step


def _where_eq(field: str, literal: str) -> Step:
    def step(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
        return [node for node in nodes if type(node[1]) is dict and node[1].get(field) == literal]

    return step


def _index(position: int) -> Step:
    def step(nodes: list[Node], _resource: dict[str, Any]) -> list[Node]:
        return nodes[position : position + 1]

    return step


def _resource_root(nodes: list[Node], resource: dict[str, Any]) -> list[Node]:
    return [(resource.get("resourceType", "Resource"), resource)]


def _chain(steps: list[Step]) -> Accessor:
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def two(nodes: list[Node], resource: dict[str, Any]) -> list[Node]:
            return second(first(nodes, resource), resource)

        return two

    def run(nodes: list[Node], resource: dict[str, Any]) -> list[Node]:
        for step in steps:
            if not nodes:
                return nodes
            nodes = step(nodes, resource)
        return nodes

    return run


@dataclass(frozen=True, slots=True)
class _Branch:
    accessor: Accessor
    types: frozenset[str]
    first_keys: tuple[str, ...] | None
    required_binding: bool  # its last step selects only elements with a required binding


def _compile_branch(
    ops: list[Op], context_types: frozenset[str], resource_type: str, model: TypeModel
) -> _Branch:
    steps: list[Step] = []
    types = context_types
    first_keys: tuple[str, ...] | None = None
    required_binding = False
    _, root = ops[0]
    rest = ops[1:]
    if root == "%resource":
        steps.append(_resource_root)
        types = frozenset({resource_type})
    elif root in (resource_type, *_ANY_RESOURCE) and context_types == {resource_type}:
        pass  # the expression names its context: the collection is the resource itself
    elif root in model.resource_types or root in _ANY_RESOURCE or root.startswith("%"):
        raise _Unsupported(root)
    else:
        rest = [("child", root), *rest]

    for position, op in enumerate(rest):
        kind = op[0]
        if any(t in _ANY_RESOURCE for t in types) and kind != "index":
            raise _Unsupported("navigation below a resource of unknown type")
        if kind == "child":
            table: dict[str, tuple[tuple[str, str], ...]] = {}
            for node_type in types:
                entries = model.children.get(node_type, {}).get(op[1])
                if entries:
                    table[node_type] = entries
            if not table:
                raise _Unsupported(op[1])
            following = rest[position + 1] if position + 1 < len(rest) else None
            if following is not None and following[0] == "oftype":
                # `value.ofType(Quantity)`: only look for `valueQuantity`, the filter is then a no-op.
                wanted = model.canonical_type(following[1])
                if wanted is None or any(t in _ANY_RESOURCE for e in table.values() for _, t in e):
                    raise _Unsupported(following[1])
                pruned = {
                    node_type: tuple((key, t) for key, t in entries if model.is_a(t, wanted))
                    for node_type, entries in table.items()
                }
                table = {node_type: entries for node_type, entries in pruned.items() if entries}
                if not table:
                    raise _Unsupported(f"{op[1]}.ofType({following[1]}) can never match")
            if position == 0 and not steps:
                first_keys = tuple(dict.fromkeys(key for entries in table.values() for key, _ in entries))
            steps.append(_child_step(table, covers_input=set(table) == set(types)))
            types = frozenset(t for entries in table.values() for _, t in entries)
            required_binding = all((node_type, op[1]) in model.required_bindings for node_type in table)
        elif kind == "oftype":
            wanted = model.canonical_type(op[1])
            if wanted is None:
                raise _Unsupported(op[1])
            keep = frozenset(t for t in types if model.is_a(t, wanted))
            if keep != types:
                steps.append(_filter_types(keep))
            types = keep
        elif kind == "resolve_is":
            if types != {"Reference"} or op[1] not in model.resource_types:
                raise _Unsupported(op[1])
            steps.append(_resolve_is(op[1], model.resource_types))
            required_binding = False
        elif kind == "where_eq":
            for node_type in types:
                entries = model.children.get(node_type, {}).get(op[1], ())
                if len(entries) != 1 or entries[0][1] not in model.primitives:
                    raise _Unsupported(op[1])
            steps.append(_where_eq(op[1], op[2]))
        elif kind == "index":
            steps.append(_index(int(op[1])))
        else:  # pragma: no cover - _parse only produces the kinds above
            raise _Unsupported(kind)
    if not steps:
        return _Branch(lambda nodes, _resource: nodes, types, None, False)
    return _Branch(_chain(steps), types, first_keys, required_binding)


def _union(accessors: list[Accessor]) -> Accessor:
    if len(accessors) == 1:
        return accessors[0]

    def run(nodes: list[Node], resource: dict[str, Any]) -> list[Node]:
        out: list[Node] = []
        for accessor in accessors:
            out.extend(accessor(nodes, resource))
        return out

    return run


@dataclass(frozen=True, slots=True)
class FastExpression:
    accessor: Accessor
    types: frozenset[str]  # the types the result nodes can have
    # JSON keys of the context of which at least one must be present for a non-empty result
    # (None: no such shortcut); lets the indexer skip absent elements without a call.
    context_keys: tuple[str, ...] | None
    # Every result is an element with a required binding or a boolean: a handful of values
    # (status, gender, active), so a search should not start from them.
    few_values: bool = False


def compile_fast(
    branches: list[str], context_types: frozenset[str], resource_type: str, model: TypeModel
) -> FastExpression | None:
    """Compile the union of `branches` (already normalised) into an accessor, or None.

    `context_types` are the possible types of the input collection: the resource type for a
    parameter's own expression, the composite's element types for a component expression.
    """
    compiled: list[_Branch] = []
    keys: list[str] | None = []
    try:
        for branch in branches:
            compiled.append(_compile_branch(_parse(branch), context_types, resource_type, model))
    except _Unsupported:
        return None
    for part in compiled:
        keys = None if keys is None or part.first_keys is None else [*keys, *part.first_keys]
    context_keys = tuple(dict.fromkeys(keys)) if keys is not None else None
    few_values = all(part.required_binding or part.types == {"boolean"} for part in compiled)
    out_types = frozenset(t for part in compiled for t in part.types)
    return FastExpression(_union([part.accessor for part in compiled]), out_types, context_keys, few_values)
