"""Search parameter parsing and cursors, without a database."""

from __future__ import annotations

import math

import pytest

from garrison.errors import BadRequest
from garrison.fhir.definitions import Definitions
from garrison.fhir.search.paging import Position, decode_cursor, encode_cursor
from garrison.fhir.search.parse import (
    ChainFilter,
    HasFilter,
    SearchParser,
    SimpleFilter,
    split_unescaped,
    unescape,
)
from garrison.fhir.search.predicates import split_prefix
from garrison.settings import Settings


@pytest.mark.parametrize(
    ("value", "separator", "parts"),
    [
        ("a,b", ",", ["a", "b"]),
        (r"a\,b,c", ",", [r"a\,b", "c"]),
        (r"a\\,b", ",", [r"a\\", "b"]),  # an escaped backslash does not escape the comma
        ("sys|code", "|", ["sys", "code"]),
        (r"sys|co\|de", "|", ["sys", r"co\|de"]),
        ("x$y$z", "$", ["x", "y", "z"]),
        ("", ",", [""]),
    ],
)
def test_split_unescaped(value: str, separator: str, parts: list[str]) -> None:
    assert split_unescaped(value, separator) == parts


def test_unescape() -> None:
    assert unescape(r"a\,b\|c\$d\\e") == r"a,b|c$d\e"
    assert unescape("plain") == "plain"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ge2020", ("ge", "2020")), ("2020", ("eq", "2020")), ("ap5", ("ap", "5")), ("eq", ("eq", "eq"))],
)
def test_split_prefix(value: str, expected: tuple[str, str]) -> None:
    assert split_prefix(value) == expected


@pytest.mark.parametrize(
    "keys",
    [(), ("2020-01-01T00:00:00.000000",), (None, 1.5), (-math.inf, math.inf, "x"), (0.1 + 0.2,)],
)
def test_cursor_round_trip(keys: tuple[object, ...]) -> None:
    position = Position(False, keys, "Observation", "abc-1")
    assert decode_cursor(encode_cursor(position)) == position


@pytest.mark.parametrize("token", ["", "!!!", "eyJ2IjoyfQ", "bm90IGpzb24"])
def test_bad_cursors(token: str) -> None:
    with pytest.raises(BadRequest, match="_cursor"):
        decode_cursor(token)


def test_parse_resolves_names(definitions: Definitions) -> None:
    parser = SearchParser(definitions, Settings())
    parsed = parser.parse(
        "Observation",
        [
            ("code", "a,b"),
            ("subject:Patient.name:exact", "Smith"),
            ("_has:Provenance:target:agent", "Practitioner/1"),
            ("_sort", "-date,_id"),
            ("_count", "7"),
            ("_include:iterate", "Observation:patient"),
            ("_format", "json"),
        ],
    )
    code, chain, has = parsed.filters["Observation"]
    assert isinstance(code, SimpleFilter) and code.values == ("a", "b")
    assert isinstance(chain, ChainFilter) and [t for t, _ in chain.targets] == ["Patient"]
    inner = chain.targets[0][1]
    assert isinstance(inner, SimpleFilter) and inner.modifier == "exact"
    assert isinstance(has, HasFilter) and has.source_type == "Provenance"
    assert [(k.code, k.descending, k.param_type) for k in parsed.sort] == [
        ("date", True, "date"),
        ("_id", False, "id"),
    ]
    assert parsed.count == 7
    assert parsed.includes[0].iterate and parsed.includes[0].param == "patient"
    assert ("_format", "json") not in parsed.accepted


def test_parse_rejects_unknown_types(definitions: Definitions) -> None:
    with pytest.raises(BadRequest, match="Nonsense"):
        SearchParser(definitions, Settings()).parse("Nonsense", [])
