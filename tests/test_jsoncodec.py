"""FHIR JSON parsing keeps every number's text (https://hl7.org/fhir/R4/datatypes.html#decimal)."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest

from garrison.fhir.jsoncodec import MAX_DEPTH, dumps, parse_json


@pytest.mark.parametrize(
    "number",
    [
        "1.50",  # trailing zero: a float would write 1.5
        "-1.230",
        "1.0",
        "100.0",
        "0.10000000000000001",  # more digits than a float keeps
        "112.41600000000001",  # as many as it keeps
        "12345678901234567890",  # a 64-bit integer
        "1234567890123456789012345",  # longer than orjson's integers
        "3",
        "-0.0",
    ],
)
@pytest.mark.parametrize(
    "layout", ['{{"a":{}}}', '{{ "a": [ {} ] }}\n', '{{\n    "a": [\n        {}\n    ]\n}}']
)
def test_numbers_are_written_back_as_they_were_read(number: str, layout: str) -> None:
    parsed = parse_json(layout.format(number))
    written = dumps(parsed)
    assert written in (f'{{"a":{number}}}', f'{{"a":[{number}]}}')


def test_exponents_keep_their_value_and_significant_digits() -> None:
    parsed = parse_json(b'{"a":1.50e2}')
    assert parsed["a"] == Decimal(150) and dumps(parsed) == '{"a":150}'


def test_digits_inside_strings_do_not_change_how_numbers_parse() -> None:
    text = b'{"oid":"urn:oid:1.3.6.1.4.1.19376.1.2","ref":"Patient/8a66bdba-12e3-4173","v":7.5}'
    parsed = parse_json(text)
    assert parsed["oid"] == "urn:oid:1.3.6.1.4.1.19376.1.2" and parsed["v"] == 7.5
    assert dumps(parsed).encode() == text


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        parse_json(b'{"a": 1.50,')
    with pytest.raises(orjson.JSONDecodeError):
        parse_json(b'{"a": 1.5,')


def test_pretty_printed_json_is_read_as_orjson_reads_it_when_every_number_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Synthea's bundles are pretty-printed: reading them a second time, number by number, doubled
    # the cost of parsing a transaction.
    def slow_path(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("parsed a second time")

    monkeypatch.setattr(json, "loads", slow_path)
    text = (
        b'{\n  "resourceType": "Observation",\n  "note": [ { "text": "a  b\\n c" } ],\n'
        b'  "v": [ 7.5, 1.0, 3 ]\n}'
    )
    parsed = parse_json(text)
    assert parsed == {"resourceType": "Observation", "note": [{"text": "a  b\n c"}], "v": [7.5, 1.0, 3]}
    assert [type(v) for v in parsed["v"]] == [float, float, int]


@pytest.mark.parametrize(
    ("text", "written"),
    [
        (b'{\n  "v": 1.50\n}', '{"v":1.50}'),  # a trailing zero
        # an escape orjson writes otherwise, and a number a float would change
        (b'{ "s": "\\u00e9", "v": 1.50 }', '{"s":"\u00e9","v":1.50}'),
        (b'{ "s": "x y", "v": [1.5, 2.50] }', '{"s":"x y","v":[1.5,2.50]}'),
    ],
)
def test_pretty_printed_json_keeps_numbers_that_a_float_would_change(text: bytes, written: str) -> None:
    assert dumps(parse_json(text)) == written


def test_json_deeper_than_can_be_written_back_is_malformed() -> None:
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert dumps(parse_json(deepest)) == deepest
    with pytest.raises(orjson.JSONDecodeError, match="nested more than 254 levels"):
        parse_json("[" + deepest + "]")
