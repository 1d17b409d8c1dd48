"""SMART on FHIR scopes: parsing (v1 and v2), and deciding what a client may be granted.

Resource scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):
- v1: `patient/Observation.read`, `user/*.write`, `system/*.*`
- v2: `patient/*.rs`, `user/Observation.cruds`, granular `patient/Observation.rs?category=laboratory`
v1 `read` means v2 `rs`, `write` means `cud`, `*` means `cruds`
(SMART 2 §scopes-for-requesting-fhir-resources).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

Context = Literal["patient", "user", "system"]
PERMISSIONS = "cruds"  # create, read, update, delete, search: always written in this order

# Scopes that are not about resources (OpenID Connect and SMART launch/refresh scopes).
OPENID = "openid"
FHIR_USER = "fhirUser"
LAUNCH = "launch"
LAUNCH_PATIENT = "launch/patient"
OFFLINE_ACCESS = "offline_access"
ONLINE_ACCESS = "online_access"
USER_FLOW_SCOPES = frozenset({OPENID, FHIR_USER, LAUNCH, LAUNCH_PATIENT, OFFLINE_ACCESS, ONLINE_ACCESS})

_RESOURCE_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})"
    r"\.(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>[^\s]+))?$"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

# Advertised in .well-known/smart-configuration (examples of what clients may ask for).
SCOPES_SUPPORTED = (
    OPENID,
    FHIR_USER,
    LAUNCH,
    LAUNCH_PATIENT,
    OFFLINE_ACCESS,
    ONLINE_ACCESS,
    "patient/*.rs",
    "patient/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.rs",
    "user/*.cruds",
    "user/*.read",
    "user/*.write",
    "system/*.rs",
    "system/*.cruds",
    "system/*.read",
)


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One parsed resource scope. `permissions` is a subset of "cruds"; `parameters` are the
    granular search restrictions (`?category=...`), all of which a resource must satisfy."""

    text: str
    context: Context
    resource_type: str  # a FHIR resource type, or "*" for all
    permissions: frozenset[str]
    parameters: tuple[tuple[str, str], ...] = ()
    version: Literal[1, 2] = 2

    def permits(self, resource_type: str, permission: str) -> bool:
        """Whether this scope allows `permission` (one of c r u d s) on `resource_type`,
        before any granular parameters are applied."""
        return self.resource_type in ("*", resource_type) and permission in self.permissions

    def covers(self, other: ResourceScope) -> bool:
        """Whether everything `other` allows is allowed by this scope (same context)."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
            and set(self.parameters) <= set(other.parameters)
        )


def split_scopes(scope: str | None) -> list[str]:
    """The scope parameter as a list (RFC 6749 §3.3: space-delimited), duplicates removed."""
    seen: dict[str, None] = {}
    for item in (scope or "").split():
        seen.setdefault(item, None)
    return list(seen)


def parse_resource_scope(text: str) -> ResourceScope | None:
    """Parse a SMART resource scope; None if `text` is not one (or is malformed)."""
    match = _RESOURCE_SCOPE.match(text)
    if match is None:
        return None
    perms = match["perms"]
    version: Literal[1, 2] = 1 if perms in _V1 else 2
    letters = _V1.get(perms, perms)
    if not letters:
        return None
    query = match["query"]
    if query is not None and version == 1:
        return None  # granular scopes exist only in SMART v2
    parameters: tuple[tuple[str, str], ...] = ()
    if query is not None:
        pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=False)
        if not pairs:
            return None
        parameters = tuple(sorted(pairs))
    context: Context = match["context"]  # type: ignore[assignment]  # the regex allows only these
    return ResourceScope(
        text=text,
        context=context,
        resource_type=match["type"],
        permissions=frozenset(letters),
        parameters=parameters,
        version=version,
    )


def resource_scopes(scopes: Iterable[str]) -> tuple[ResourceScope, ...]:
    """The resource scopes among `scopes`, parsed (others are skipped)."""
    parsed = (parse_resource_scope(s) for s in scopes)
    return tuple(p for p in parsed if p is not None)


def grantable(requested: Iterable[str], allowed: Iterable[str], contexts: Iterable[str]) -> list[str]:
    """The requested scopes this client may be granted, in request order.

    A resource scope is granted when one of the client's allowed scopes covers it (same context,
    same or wildcard type, at least the permissions, no more granular restriction) and its
    context is one the flow serves (`patient`/`user` for apps, `system` for backend services).
    Other scopes are granted only if the client is allowed them verbatim and the flow serves
    them (OpenID and launch scopes belong to the user-facing flow). Unknown scopes are dropped,
    as RFC 6749 §3.3 permits; the response's `scope` tells the client what it got.
    """
    allowed_list = list(allowed)
    allowed_resource = resource_scopes(allowed_list)
    allowed_plain = {s for s in allowed_list if parse_resource_scope(s) is None}
    wanted_contexts = set(contexts)
    user_flow = bool(wanted_contexts & {"patient", "user"})
    granted: list[str] = []
    for scope in requested:
        parsed = parse_resource_scope(scope)
        if parsed is not None:
            if parsed.context in wanted_contexts and any(a.covers(parsed) for a in allowed_resource):
                granted.append(scope)
        elif user_flow and scope in USER_FLOW_SCOPES and scope in allowed_plain:
            granted.append(scope)
    return granted


def has_patient_scopes(scopes: Iterable[str]) -> bool:
    return any(s.context == "patient" for s in resource_scopes(scopes))
