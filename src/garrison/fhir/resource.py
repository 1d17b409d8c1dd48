"""Small value types shared by the repository, search and the router."""

from __future__ import annotations

import re
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
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_instant(moment: datetime) -> str:
    """FHIR instant with microseconds in UTC; fixed width so it also sorts as text."""
    # isoformat is several times faster than strftime and gives the same text for UTC.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def dumps(value: Any) -> str:
    return jsoncodec.dumps(value)
