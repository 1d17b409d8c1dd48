"""Server-assigned ids (`garrison.fhir.resource.new_id`): valid FHIR ids, version 7 UUIDs
(RFC 9562), unique, and ordered by the time they were made, so that new rows land at the end of
the primary keys and (type, id) indexes."""

from __future__ import annotations

import time
import uuid

from garrison.fhir.resource import ID_PATTERN, new_id


def test_ids_are_version_7_uuids_and_valid_fhir_ids() -> None:
    made = [new_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for value in made:
        assert ID_PATTERN.match(value)
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_the_time_and_sort_in_the_order_made() -> None:
    before_ms = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    after_ms = time.time_ns() // 1_000_000
    assert first < second
    stamped = uuid.UUID(first).int >> 80
    assert before_ms <= stamped <= after_ms


def test_ids_made_in_one_millisecond_differ_in_their_random_bits() -> None:
    made = {new_id() for _ in range(200)}
    prefixes = {value[:13] for value in made}  # the 48-bit millisecond part
    assert len(made) == 200
    assert len(prefixes) < len(made)  # many share a millisecond, none share the id
