"""Write the facility network into the FHIR store, idempotently, in the caller's transaction.

Each resource is found by its business identifier (DMIS ID, VA station number, NPI, ...) with the
semantics of a conditional update (https://hl7.org/fhir/R4/http.html#cond-update): no match
creates it, one match updates it, several matches are an error. Unlike a plain conditional
update, a match whose content is already what the catalogue says is left alone, so loading twice
writes no new versions. The lookups are batched (Garrison's own identifier systems are read with
one search each, NPIs 20 at a time), which keeps a whole load to about a second.

New resources get readable, deterministic ids (`Organization/mhs-0109`, `Practitioner/mhs-0109-01`)
so that a fresh database always has the same ids; where one of those ids is already taken by an
unrelated resource a fresh server id is used instead. Callers should still take ids from the
returned `NetworkSummary` rather than assume them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, select

from garrison.beneficiaries.vocabulary import (
    DMIS_ID,
    HEALTHCARE_SERVICE_ID,
    NPI,
    PAYER_ID,
    PRACTITIONER_ROLE_ID,
    TRICARE_NETWORK_PROVIDER,
    VA_STATION,
)
from garrison.db.schema import resource
from garrison.errors import Issue, IssueCode, NotFound, PreconditionFailed
from garrison.fhir.repository import Repository
from garrison.fhir.resource import StoredResource, new_id
from garrison.fhir.search.query import SearchRequest
from garrison.network import resources
from garrison.network.catalogue import catalogue, tricare_payer
from garrison.network.model import Facility, Service
from garrison.network.rollout import seed_rollout

ID_PREFIX = "mhs"  # Military Health System
# Identifier values OR'd in one lookup, and ids per existence check.
_CHUNK = 20
_ID_CHUNK = 100
_MAX_PAGE = 1000
# Identifier systems that name network resources only (Organization/Location codes, services, roles).
_OWN_SYSTEMS = frozenset(
    {DMIS_ID, VA_STATION, TRICARE_NETWORK_PROVIDER, PAYER_ID, HEALTHCARE_SERVICE_ID, PRACTITIONER_ROLE_ID}
)


@dataclass(frozen=True)
class NetworkSummary:
    """The FHIR ids of the loaded network, and what the load did.

    `services` is keyed by (facility code, Service); practitioners and their roles by the
    practitioner's catalogue key (`<facility code>-<nn>`).
    """

    organizations: dict[str, str]  # facility code -> Organization id
    locations: dict[str, str]  # facility code -> Location id (headquarters have none)
    services: dict[tuple[str, Service], str]  # (facility code, service) -> HealthcareService id
    practitioners: dict[str, str]  # practitioner key -> Practitioner id
    practitioner_roles: dict[str, str]  # practitioner key -> PractitionerRole id
    payer_organization: str  # the TRICARE payer Organization id (Coverage.payor)
    created: dict[str, int] = field(default_factory=dict)  # resource type -> new resources
    updated: dict[str, int] = field(default_factory=dict)  # resource type -> changed resources
    unchanged: int = 0
    rollout_seeded: int = 0  # facility_rollout rows inserted

    def services_at(self, code: str) -> dict[Service, str]:
        return {service: i for (facility, service), i in self.services.items() if facility == code}

    @property
    def resource_count(self) -> int:
        return (
            len(self.organizations)
            + 1
            + len(self.locations)
            + len(self.services)
            + len(self.practitioners)
            + len(self.practitioner_roles)
        )

    @property
    def changed(self) -> bool:
        return bool(sum(self.created.values()) or sum(self.updated.values()) or self.rollout_seeded)


@dataclass(frozen=True, slots=True)
class _Key:
    resource_type: str
    system: str
    value: str
    default_id: str


@dataclass(slots=True)
class _Match:
    id: str
    content: dict[str, Any] | None  # None: not stored (yet, or any more)
    deleted: bool = False  # the id belongs to a deleted resource: an update recreates it


_Resolved = tuple[str, Any, _Key, _Match]


def _keys(facilities: list[Facility]) -> Iterator[tuple[str, Any, _Key]]:
    """Every resource of the network as (kind, catalogue object, key), parents before children."""
    payer = tricare_payer()
    for f in facilities:
        yield "organization", f, _Key("Organization", f.identifier_system, f.code, f"{ID_PREFIX}-{f.code}")
    yield (
        "payer",
        payer,
        _Key("Organization", PAYER_ID, payer.code, f"{ID_PREFIX}-payer-{payer.code.lower()}"),
    )
    for f in facilities:
        if f.has_site:
            yield "location", f, _Key("Location", f.identifier_system, f.code, f"{ID_PREFIX}-{f.code}")
    for f in facilities:
        for s in f.services:
            value = resources.healthcare_service_identifier(f.code, s)
            yield (
                "service",
                (f, s),
                _Key("HealthcareService", HEALTHCARE_SERVICE_ID, value, f"{ID_PREFIX}-{value}"),
            )
    for f in facilities:
        for p in f.practitioners:
            yield "practitioner", p, _Key("Practitioner", NPI, p.npi, f"{ID_PREFIX}-{p.key}")
    for f in facilities:
        for p in f.practitioners:
            yield (
                "role",
                (f, p),
                _Key("PractitionerRole", PRACTITIONER_ROLE_ID, p.key, f"{ID_PREFIX}-{p.key}"),
            )


def _search(repo: Repository, resource_type: str, name: str, values: list[str]) -> list[StoredResource]:
    """Current resources matching any of `values` (OR'd, https://hl7.org/fhir/R4/search.html#combining)."""
    found: list[StoredResource] = []
    for start in range(0, len(values), _CHUNK):
        chunk = ",".join(quote(v, safe="/:|") for v in values[start : start + _CHUNK])
        found.extend(_all_pages(repo, resource_type, [(name, chunk)]))
    return found


def _all_pages(repo: Repository, resource_type: str, params: list[tuple[str, str]]) -> list[StoredResource]:
    found: list[StoredResource] = []
    cursor: list[tuple[str, str]] = []
    while True:
        query = [*params, ("_count", str(_MAX_PAGE)), ("_total", "none"), *cursor]
        page = repo.search(SearchRequest(resource_type, query))
        found.extend(page.matches)
        if page.next_cursor is None:
            return found
        cursor = [("_cursor", page.next_cursor)]


def _find_existing(repo: Repository, keys: list[_Key]) -> dict[_Key, _Match]:
    """Match keys to stored resources by identifier, a chunk of values per search."""
    groups: dict[tuple[str, str], list[_Key]] = {}
    for key in keys:
        groups.setdefault((key.resource_type, key.system), []).append(key)
    found: dict[_Key, _Match] = {}
    for (resource_type, system), group in groups.items():
        by_value = {k.value: k for k in group}
        hits: dict[str, dict[str, dict[str, Any]]] = {}
        # Token search (https://hl7.org/fhir/R4/search.html#token): a system only Garrison's network
        # uses is read whole (`system|`, one query); a shared one (NPI) value by value.
        if system in _OWN_SYSTEMS:
            candidates = _all_pages(repo, resource_type, [("identifier", quote(f"{system}|", safe="/:|"))])
        else:
            candidates = _search(repo, resource_type, "identifier", [f"{system}|{k.value}" for k in group])
        for stored in candidates:
            content = stored.parsed()
            for identifier in content.get("identifier", []):
                value = identifier.get("value")
                if identifier.get("system") == system and value in by_value:
                    hits.setdefault(value, {})[stored.id] = content
        for value, matches in hits.items():
            if len(matches) > 1:
                ids = ", ".join(sorted(matches))
                raise PreconditionFailed(
                    f"{len(matches)} {resource_type} resources carry the identifier {system}|{value}",
                    [Issue(IssueCode.MULTIPLE_MATCHES, f"{resource_type}: {ids}")],
                )
            [(resource_id, content)] = matches.items()
            found[by_value[value]] = _Match(resource_id, content)
    return found


def _plain(value: Any) -> Any:
    """Stored JSON may come back with Decimal numbers (the codec keeps decimal precision when the
    body holds any at-risk number); the catalogue's numbers are floats, so compare as floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def strip(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in ("id", "meta")}

    return bool(_plain(strip(stored)) == strip(wanted))


def _ids_in_use(connection: Connection, resource_type: str, ids: list[str]) -> list[tuple[str, bool]]:
    """Which of `ids` exist, live or deleted (a search would not show the deleted ones, whose ids a
    create cannot take)."""
    found: list[tuple[str, bool]] = []
    for start in range(0, len(ids), _ID_CHUNK):
        rows = connection.execute(
            select(resource.c.id, resource.c.deleted).where(
                resource.c.resource_type == resource_type, resource.c.id.in_(ids[start : start + _ID_CHUNK])
            )
        )
        found.extend((row[0], bool(row[1])) for row in rows)
    return found


def _resolve(repo: Repository, facilities: list[Facility], *, create: bool) -> list[_Resolved]:
    planned = list(_keys(facilities))
    existing = _find_existing(repo, [key for _, _, key in planned])
    missing = [key for _, _, key in planned if key not in existing]
    if missing and not create:
        key = missing[0]
        raise NotFound(
            f"{key.resource_type} {key.system}|{key.value} is not stored; run `garrison network load`"
        )
    # The readable default id, unless an unrelated resource already has it.
    by_type: dict[str, list[str]] = {}
    for key in missing:
        by_type.setdefault(key.resource_type, []).append(key.default_id)
    in_use = {
        (resource_type, resource_id): deleted
        for resource_type, ids in by_type.items()
        for resource_id, deleted in _ids_in_use(repo.connection, resource_type, ids)
    }
    resolved: list[_Resolved] = []
    for kind, item, key in planned:
        match = existing.get(key)
        if match is None:
            deleted = in_use.get((key.resource_type, key.default_id))
            if deleted is None:
                match = _Match(key.default_id, None)
            elif deleted:
                # A deleted resource (most likely our own earlier one): recreate it under that id
                # (https://hl7.org/fhir/R4/http.html#update), so ids stay stable.
                match = _Match(key.default_id, None, deleted=True)
            else:
                match = _Match(new_id(), None)
        resolved.append((kind, item, key, match))
    return resolved


def _summary(resolved: list[_Resolved], **counts: Any) -> NetworkSummary:
    ids: dict[str, dict[Any, str]] = {}
    payer = ""
    for kind, item, _key, match in resolved:
        if kind == "payer":
            payer = match.id
        elif kind in {"organization", "location"}:
            ids.setdefault(kind, {})[item.code] = match.id
        elif kind == "service":
            facility, service = item
            ids.setdefault(kind, {})[(facility.code, service)] = match.id
        elif kind == "practitioner":
            ids.setdefault(kind, {})[item.key] = match.id
        else:
            ids.setdefault(kind, {})[item[1].key] = match.id
    return NetworkSummary(
        organizations=ids.get("organization", {}),
        locations=ids.get("location", {}),
        services=ids.get("service", {}),
        practitioners=ids.get("practitioner", {}),
        practitioner_roles=ids.get("role", {}),
        payer_organization=payer,
        **counts,
    )


def _body(kind: str, item: Any, ids: NetworkSummary) -> dict[str, Any]:
    if kind == "organization":
        parent = ids.organizations.get(item.parent_code) if item.parent_code else None
        return resources.organization(item, parent)
    if kind == "payer":
        return resources.payer_organization(item, ids.organizations[item.parent_code])
    if kind == "location":
        return resources.location(item, ids.organizations[item.code])
    if kind == "service":
        facility, service = item
        return resources.healthcare_service(
            facility, service, ids.organizations[facility.code], ids.locations[facility.code]
        )
    if kind == "practitioner":
        return resources.practitioner(item)
    facility, person = item
    return resources.practitioner_role(
        person,
        facility=facility,
        practitioner_id=ids.practitioners[person.key],
        organization_id=ids.organizations[facility.code],
        location_id=ids.locations[facility.code],
        service_ids=[ids.services[(facility.code, s)] for s in person.services],
    )


def load_network(repo: Repository) -> NetworkSummary:
    """Create or update the whole catalogue's network in the repository's transaction.

    Idempotent: a second run finds every resource by identifier, sees it unchanged and writes
    nothing. Also seeds the `facility_rollout` rows of facilities that have none. Never commits.
    """
    facilities = catalogue()
    # Serialise concurrent loaders (PostgreSQL advisory lock; SQLite has one writer anyway), so a
    # second loader waits and then finds everything the first one committed.
    repo.lock_condition("Organization", f"identifier={DMIS_ID}|garrison-network-load")
    resolved = _resolve(repo, facilities, create=True)
    ids = _summary(resolved)
    created: Counter[str] = Counter()
    updated: Counter[str] = Counter()
    unchanged = 0
    with repo.deferred_writes():
        for kind, item, key, match in resolved:
            body = _body(kind, item, ids)
            if match.content is not None and _same(match.content, body):
                unchanged += 1
                continue
            if match.content is None and not match.deleted:
                # The id was checked free above, under the loader's lock, so the insert can join
                # the batched flush (only a client's PUT of this very id in between could collide,
                # and would fail this transaction as a whole).
                repo.create(body, assigned_id=match.id)
                created[key.resource_type] += 1
            else:
                body["id"] = match.id
                repo.update(key.resource_type, match.id, body)
                (created if match.deleted else updated)[key.resource_type] += 1
    seeded = seed_rollout(repo.connection, facilities, actor=repo.context.actor)
    return _summary(
        resolved, created=dict(created), updated=dict(updated), unchanged=unchanged, rollout_seeded=seeded
    )


def find_network(repo: Repository) -> NetworkSummary:
    """The ids of an already loaded network, without writing; NotFound if any resource is missing."""
    return _summary(_resolve(repo, catalogue(), create=False), unchanged=0)
