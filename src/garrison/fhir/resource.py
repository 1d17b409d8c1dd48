"""Small value types shared by the repository, search and the router."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from garrison.fhir import jsoncodec
from garrison.fhir.jsoncodec import parse_json

# https://hl7.org/fhir/R4/datatypes.html#id
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored: `content` is the exact JSON served to clients."""

    resource_type: str
    id: str
    version_id: int
    last_updated: str  # ISO-8601 UTC, e.g. 2026-11-25T21:29:22.123456+00:00
    deleted: bool
    content: str | None

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    def parsed(self) -> dict[str, Any]:
        if self.content is None:
            return {}
        value: dict[str, Any] = parse_json(self.content)
        return value


def new_id() -> str:
    """A server-assigned id: a version 7 UUID (RFC 9562 section 5.7), the Unix time in
    milliseconds in its first 48 bits and 74 random bits after.

    New ids sort after older ones, so the rows a write adds to the primary keys and the
    (type, id) indexes land at the end of each B-tree instead of on a random page each: a
    Bundle of a few hundred resources dirties a few pages per index, not hundreds."""
    millis = time.time_ns() // 1_000_000
    random = secrets.randbits(74)
    value = (
        (millis & _48_BITS) << 80 | 0x7 << 76 | (random >> 62) << 64 | 0b10 << 62 | (random & _62_BITS)
    )
    return str(uuid.UUID(int=value))


_48_BITS = (1 << 48) - 1
_62_BITS = (1 << 62) - 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_instant(moment: datetime) -> str:
    """FHIR instant with microseconds in UTC; fixed width so it also sorts as text."""
    # isoformat is several times faster than strftime and gives the same text for UTC.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def dumps(value: Any) -> str:
    return jsoncodec.dumps(value)
