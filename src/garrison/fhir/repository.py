"""The FHIR repository: every read and write of clinical data goes through one of these.

A Repository is bound to a caller (AccessContext) and to a connection whose transaction the caller
owns; the repository never commits. Writes validate the resource against the R4 definitions, keep
every version in `resource_history`, and rewrite the resource's search index rows in the same
transaction, so a failure anywhere leaves nothing behind.

Concurrency is enforced by the database, not by the process: an update is a version-checked
`UPDATE ... WHERE version_id = :expected` and every version is unique in `resource_history`, so two
writers racing from the same version cannot both succeed, on SQLite or on PostgreSQL's default
READ COMMITTED isolation.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from sqlalchemy import Connection, and_, bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from garrison.audit.records import AuditRecord
from garrison.db.bulk import insert_tuples
from garrison.db.engine import DriverStatement, Lookup, is_postgres
from garrison.db.schema import INDEX_TABLES, resource, resource_history
from garrison.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Issue,
    IssueCode,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    Withheld,
)
from garrison.fhir.access import AccessContext
from garrison.fhir.audit_trail import write_record
from garrison.fhir.authz.consent_rules import bump_consent_generation
from garrison.fhir.authz.guard import Guard
from garrison.fhir.authz.labels import compartment_patients, security_labels
from garrison.fhir.authz.policy import Interaction
from garrison.fhir.definitions import Definitions
from garrison.fhir.resource import ID_PATTERN, StoredResource, dumps, format_instant, new_id, utc_now
from garrison.fhir.search.indexer import INDEX_COLUMNS, IndexRows, index_tuples, indexer_for
from garrison.fhir.search.query import SearchPage, SearchRequest, execute_search, find_matching_ids
from garrison.fhir.validation import validator_for
from garrison.settings import Settings

# The hottest statement of the API, on the driver's cursor (see DriverStatement).
_CURRENT_ROW = DriverStatement(
    "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource"
    " WHERE resource_type = :resource_type AND id = :resource_id"
)


def current_row_lookup(resource_type: str, resource_id: str) -> Lookup:
    """The lookup a read of `resource_type/resource_id` makes, to be made ahead with the request's
    others (`garrison.db.engine.prefetched`)."""
    return (_CURRENT_ROW, {"resource_type": resource_type, "resource_id": resource_id})


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    stored: StoredResource
    created: bool  # True when a new resource came into being (HTTP 201)
    changed: bool = True  # False when a conditional create matched an existing resource


@dataclass(slots=True)
class _PendingVersion:
    stored: StoredResource
    method: str
    index_rows: IndexRows | None
    replace_index: bool  # False for brand-new resources: there are no old rows to delete
    insert_current: bool = False  # a server-assigned id: the current row can be inserted later too


@dataclass
class _WriteBuffer:
    versions: list[_PendingVersion] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PreparedVersion:
    """A validated, stamped and indexed version, ready to be written."""

    stored: StoredResource
    index_rows: IndexRows


def prepare_version(
    definitions: Definitions, resource_json: dict[str, Any], resource_id: str, version: int
) -> PreparedVersion:
    """Stamp id and meta, validate and compute index rows: CPU only, no database.

    Raises Unprocessable with every issue if the resource is invalid.
    """
    resource_type = resource_json["resourceType"]
    last_updated = format_instant(utc_now())
    meta = dict(resource_json.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    # Keys in the order FHIR JSON usually reads: resourceType, id, meta first.
    stamped = {
        "resourceType": resource_type,
        "id": resource_id,
        "meta": meta,
        **{k: v for k, v in resource_json.items() if k not in ("resourceType", "id", "meta")},
    }
    issues = validator_for(definitions).validate(stamped)
    if issues:
        raise Unprocessable(f"{resource_type} is not valid: {issues[0].diagnostics}", issues)
    stored = StoredResource(
        resource_type=resource_type,
        id=resource_id,
        version_id=version,
        last_updated=last_updated,
        deleted=False,
        content=dumps(stamped),
    )
    index_rows = indexer_for(definitions).index(stamped)
    # Made here, not when inserting: a Bundle's thousands of rows would be made under the write lock.
    index_rows.tuples(resource_type, resource_id)
    return PreparedVersion(stored, index_rows)


def settle_for_writes(definitions: Definitions) -> None:
    """For a process that writes for the rest of its life (a server worker, an NDJSON load
    worker): compile the validator and the indexer `prepare_version` uses now, not on the first
    write, then move everything built so far out of the cyclic garbage collector's reach
    (`gc.freeze`). The definitions and what is compiled from them live as long as the process,
    and every full collection scanned them all again (tens of milliseconds each, with every
    thread of the process stopped)."""
    validator_for(definitions)
    indexer_for(definitions)
    gc.collect()
    gc.freeze()


# `resource` and `resource_history` rows as tuples, in these columns.
RESOURCE_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted", "content")
HISTORY_COLUMNS = (*RESOURCE_COLUMNS[:-1], "method", "content")


def insert_versions(
    connection: Connection,
    *,
    fresh: Sequence[StoredResource],
    versions: Sequence[tuple[StoredResource, str, IndexRows | None]],
) -> None:
    """Insert the current rows of `fresh` resources, then a history row (with its method) and
    the index rows of each version: a few multi-row statements for a whole Bundle or chunk."""
    insert_tuples(
        connection,
        resource.name,
        RESOURCE_COLUMNS,
        [(s.resource_type, s.id, s.version_id, s.last_updated, s.deleted, s.content) for s in fresh],
    )
    insert_tuples(
        connection,
        resource_history.name,
        HISTORY_COLUMNS,
        [
            (s.resource_type, s.id, s.version_id, s.last_updated, s.deleted, method, s.content)
            for s, method, _ in versions
        ],
    )
    insert_index_rows(connection, ((s.resource_type, s.id, rows) for s, _, rows in versions))


def insert_index_rows(connection: Connection, owned: Iterable[tuple[str, str, IndexRows | None]]) -> None:
    """The search index rows of resources given as (resource_type, id, rows): one multi-row
    statement (SQLite) or COPY (PostgreSQL) per index table."""
    for key, rows in index_tuples(owned).items():
        insert_tuples(connection, INDEX_TABLES[key].name, INDEX_COLUMNS[key], rows)


class Repository:
    """CRUD, history and search over the FHIR store for one caller inside one transaction."""

    def __init__(
        self,
        connection: Connection,
        definitions: Definitions,
        settings: Settings,
        context: AccessContext,
    ) -> None:
        self.connection = connection
        self.definitions = definitions
        self.settings = settings
        self.context = context
        self.guard = Guard(definitions, settings, context, connection)
        # Audit records of this request; whoever owns the transaction writes them (in it, for
        # writes; through the audit sink before answering, for reads).
        self.audit: list[AuditRecord] = []
        self.written = 0  # versions written through this repository (for statistics upkeep)
        self._buffer: _WriteBuffer | None = None

    # ----------------------------------------------------------------------------------- reads

    def check_type(self, resource_type: str) -> None:
        if resource_type not in self.definitions.resource_types:
            raise NotFound(f"Unknown resource type '{resource_type}'")

    def get_current(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version (possibly a tombstone), or None if it never existed."""
        self.flush()
        key = {"resource_type": resource_type, "resource_id": resource_id}
        row = _CURRENT_ROW.first(self.connection, key)
        if row is None:
            return None
        found_type, found_id, version_id, last_updated, deleted, content = row
        return StoredResource(found_type, found_id, version_id, last_updated, bool(deleted), content)

    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        # https://hl7.org/fhir/R4/http.html#read
        self.check_type(resource_type)
        self.guard.require("read", resource_type)
        current = self.get_current(resource_type, resource_id)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if not self._sees(current):
            raise Withheld(f"{resource_type}/{resource_id} is not known")
        if current.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted")
        return current

    def vread(self, resource_type: str, resource_id: str, version: str) -> StoredResource:
        # https://hl7.org/fhir/R4/http.html#vread
        self.check_type(resource_type)
        self.guard.require("read", resource_type)
        self.flush()
        if not version.isdigit():
            raise NotFound(f"{resource_type}/{resource_id} has no version '{version}'")
        if not self.sees_id(resource_type, resource_id):
            exists = self.get_current(resource_type, resource_id) is not None
            error = Withheld if exists else NotFound
            raise error(f"{resource_type}/{resource_id} has no version {version}")
        h = resource_history.c
        row = self.connection.execute(
            select(h.resource_type, h.id, h.version_id, h.last_updated, h.deleted, h.content).where(
                h.resource_type == resource_type, h.id == resource_id, h.version_id == int(version)
            )
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
        stored = StoredResource(*row)
        if stored.deleted:
            raise Gone(f"Version {version} of {resource_type}/{resource_id} is a deletion")
        return stored

    def search(self, request: SearchRequest) -> SearchPage:
        if request.resource_type is not None:
            self.check_type(request.resource_type)
            self.guard.require("search", request.resource_type)
        self.flush()
        return execute_search(self.connection, self.definitions, self.settings, request, guard=self.guard)

    def sees_id(self, resource_type: str, resource_id: str) -> bool:
        """Whether this caller may see the resource (False when it does not exist)."""
        return self.guard.unrestricted or self.guard.can_see(self.connection, resource_type, resource_id)

    def _sees(self, stored: StoredResource) -> bool:
        if self.guard.unrestricted:
            return True
        if stored.deleted:
            # Tombstones have no index rows to decide by; only unrestricted callers learn of them.
            return False
        return self.guard.can_see(self.connection, stored.resource_type, stored.id)

    def find_matches(self, resource_type: str, query: str) -> list[str]:
        """Ids of current resources matching a conditional query (`identifier=a|b`)."""
        self.check_type(resource_type)
        self.guard.require("search", resource_type)
        self.flush()
        if not query.strip():
            raise BadRequest("A conditional interaction needs search criteria")
        return find_matching_ids(
            self.connection, self.definitions, self.settings, resource_type, query, guard=self.guard
        )

    def find_single_match(self, resource_type: str, query: str, what: str) -> list[str]:
        """Lock the condition, then find at most one match (none or one id); several is a 412."""
        self.lock_condition(resource_type, query)
        matches = self.find_matches(resource_type, query)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"{what} matched {len(matches)} {resource_type} resources; make the criteria more selective",
                [Issue(IssueCode.MULTIPLE_MATCHES, f"{len(matches)} matches for '{query}'")],
            )
        return matches

    # ---------------------------------------------------------------------------------- writes

    def create(
        self,
        body: Any,
        *,
        if_none_exist: str | None = None,
        resource_type: str | None = None,
        assigned_id: str | None = None,
    ) -> WriteOutcome:
        """https://hl7.org/fhir/R4/http.html#create: the server assigns the id.

        `assigned_id` is for transactions, which choose ids before writing so that entries can
        refer to each other; it must be a fresh server-made id, never a client's.
        """
        resource_json = self._check_body(body, resource_type)
        resource_type = resource_json["resourceType"]
        if if_none_exist is not None:
            # https://hl7.org/fhir/R4/http.html#ccreate
            matches = self.find_single_match(resource_type, if_none_exist, "If-None-Exist")
            if matches:
                return WriteOutcome(self.read(resource_type, matches[0]), created=False, changed=False)
        return self._write(
            resource_json, assigned_id or new_id(), previous=None, method="POST", server_assigned_id=True
        )

    def update(
        self,
        resource_type: str,
        resource_id: str,
        body: Any,
        *,
        if_match: str | None = None,
        method: str = "PUT",
    ) -> WriteOutcome:
        """https://hl7.org/fhir/R4/http.html#update, including update-as-create."""
        resource_json = self._check_body(body, resource_type)
        body_id = resource_json.get("id")
        if body_id is None:
            raise BadRequest(
                "The resource in an update must carry its id",
                [Issue(IssueCode.REQUIRED, "Resource.id is required in an update", f"{resource_type}.id")],
            )
        if body_id != resource_id:
            raise BadRequest(
                f"The id in the body ('{body_id}') does not match the URL ('{resource_id}')",
                [Issue(IssueCode.INVALID, "id does not match the URL", f"{resource_type}.id")],
            )
        if not ID_PATTERN.match(resource_id):
            raise BadRequest(f"'{resource_id}' is not a valid resource id")
        previous = self.get_current(resource_type, resource_id)
        if previous is not None and not self._sees(previous) and not self.guard.unrestricted:
            # Someone else's (or a withheld) resource: as if it were not there, but it cannot be
            # created either, so refuse like a missing target.
            raise Withheld(f"{resource_type}/{resource_id} is not known")
        self._check_if_match(previous, if_match, resource_type, resource_id)
        return self._write(resource_json, resource_id, previous=previous, method=method, if_match=if_match)

    def conditional_update(
        self, resource_type: str, query: str, body: Any, *, if_match: str | None = None
    ) -> WriteOutcome:
        """https://hl7.org/fhir/R4/http.html#cond-update"""
        resource_json = self._check_body(body, resource_type)
        matches = self.find_single_match(resource_type, query, "The conditional update")
        body_id = resource_json.get("id")
        if matches:
            if body_id is not None and body_id != matches[0]:
                raise BadRequest(
                    f"The id in the body ('{body_id}') is not the matching resource's ('{matches[0]}')"
                )
            resource_json["id"] = matches[0]
            return self.update(resource_type, matches[0], resource_json, if_match=if_match)
        if body_id is not None:
            return self.update(resource_type, body_id, resource_json, if_match=if_match)
        return self._write(resource_json, new_id(), previous=None, method="PUT", server_assigned_id=True)

    def patch(
        self, resource_type: str, resource_id: str, operations: Any, *, if_match: str | None = None
    ) -> WriteOutcome:
        """https://hl7.org/fhir/R4/http.html#patch with a JSON Patch (RFC 6902) document."""
        current = self.read(resource_type, resource_id)
        self._check_if_match(current, if_match, resource_type, resource_id)
        if not isinstance(operations, list):
            raise BadRequest("A JSON Patch body must be an array of operations")
        try:
            patched = jsonpatch.JsonPatch(operations).apply(current.parsed())
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
            raise Unprocessable(f"The patch cannot be applied: {exc}") from exc
        if not isinstance(patched, dict) or patched.get("resourceType") != resource_type:
            raise Unprocessable("A patch may not change the resource type")
        if patched.get("id") != resource_id:
            raise Unprocessable("A patch may not change the resource id")
        return self.update(
            resource_type, resource_id, patched, if_match=f'W/"{current.version_id}"', method="PATCH"
        )

    def delete(
        self, resource_type: str, resource_id: str, *, if_match: str | None = None
    ) -> StoredResource | None:
        """https://hl7.org/fhir/R4/http.html#delete: a versioned tombstone; history is kept.

        Returns the tombstone, or None if the resource was already deleted (deleting twice is
        not an error). Raises NotFound if it never existed.
        """
        self.check_type(resource_type)
        self.guard.require("delete", resource_type)
        previous = self.get_current(resource_type, resource_id)
        if previous is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if not self.guard.unrestricted and not self._sees(previous):
            raise Withheld(f"{resource_type}/{resource_id} is not known")
        self._check_if_match(previous, if_match, resource_type, resource_id)
        if previous.deleted:
            return None
        tombstone = StoredResource(
            resource_type=resource_type,
            id=resource_id,
            version_id=previous.version_id + 1,
            last_updated=format_instant(utc_now()),
            deleted=True,
            content=None,
        )
        self._record(
            _PendingVersion(tombstone, "DELETE", None, replace_index=True), previous, if_match=if_match
        )
        return tombstone

    def conditional_delete(self, resource_type: str, query: str) -> list[StoredResource]:
        """https://hl7.org/fhir/R4/http.html#cdelete: Garrison deletes a single match only."""
        matches = self.find_single_match(resource_type, query, "The conditional delete")
        deleted = [self.delete(resource_type, m) for m in matches]
        return [d for d in deleted if d is not None]

    # ------------------------------------------------------------------------ batching writes

    @contextmanager
    def deferred_writes(self) -> Iterator[None]:
        """Collect the index and history rows of many writes and insert them in a few statements.

        Any read or search through this repository flushes first, so callers always see their
        own writes.
        """
        outer = self._buffer is None
        if outer:
            self._buffer = _WriteBuffer()
        try:
            yield
            if outer:
                self.flush()
        finally:
            if outer:
                self._buffer = None

    def flush(self) -> None:
        if self._buffer is None or not self._buffer.versions:
            return
        pending, self._buffer.versions = self._buffer.versions, []
        self._insert_history_and_index(pending)

    # -------------------------------------------------------------------------------- helpers

    def _check_body(self, body: Any, resource_type: str | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object holding a FHIR resource")
        body_type = body.get("resourceType")
        if not isinstance(body_type, str):
            raise BadRequest(
                "The resource has no resourceType",
                [Issue(IssueCode.REQUIRED, "resourceType is required", "resourceType")],
            )
        if resource_type is not None and body_type != resource_type:
            raise BadRequest(
                f"The body is a {body_type} but the URL names {resource_type}",
                [Issue(IssueCode.INVALID, "resourceType does not match the URL", "resourceType")],
            )
        if body_type not in self.definitions.resource_types:
            raise Unprocessable(
                f"Unknown resource type '{body_type}'",
                [Issue(IssueCode.STRUCTURE, f"Unknown resource type '{body_type}'", "resourceType")],
            )
        return body

    @staticmethod
    def _check_if_match(
        current: StoredResource | None, if_match: str | None, resource_type: str, resource_id: str
    ) -> None:
        # https://hl7.org/fhir/R4/http.html#concurrency
        if if_match is None:
            return
        wanted = if_match.strip().removeprefix("W/").strip('"')
        if current is None or current.deleted or str(current.version_id) != wanted:
            have = "nothing" if current is None else f"version {current.version_id}"
            raise PreconditionFailed(
                f"If-Match names version {wanted} of {resource_type}/{resource_id}, the server has {have}"
            )

    def lock_condition(self, resource_type: str, query: str) -> None:
        """Serialise identical conditional writes so two racing requests cannot both create.

        PostgreSQL takes a transaction-scoped advisory lock on the condition; SQLite already runs
        one writer at a time (BEGIN IMMEDIATE).
        """
        if not is_postgres(self.connection):
            return
        digest = hashlib.sha256(f"{resource_type}?{query}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        self.connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def _write(
        self,
        resource_json: dict[str, Any],
        resource_id: str,
        *,
        previous: StoredResource | None,
        method: str,
        server_assigned_id: bool = False,
        if_match: str | None = None,
    ) -> WriteOutcome:
        version = 1 if previous is None else previous.version_id + 1
        prepared = prepare_version(self.definitions, resource_json, resource_id, version)
        pending = _PendingVersion(
            prepared.stored,
            method,
            prepared.index_rows,
            replace_index=previous is not None,
            insert_current=previous is None and server_assigned_id,
        )
        self._record(pending, previous, if_match=if_match)
        return WriteOutcome(prepared.stored, created=previous is None or previous.deleted)

    def create_prepared(self, prepared: PreparedVersion) -> WriteOutcome:
        """Store a first version prepared (validated and indexed) before the transaction began.

        Only for server-assigned fresh ids, which cannot collide.
        """
        if prepared.stored.version_id != 1:
            raise ValueError("only first versions can be prepared ahead of the transaction")
        pending = _PendingVersion(
            prepared.stored, "POST", prepared.index_rows, replace_index=False, insert_current=True
        )
        self._record(pending, None)
        return WriteOutcome(prepared.stored, created=True)

    def _record(
        self, pending: _PendingVersion, previous: StoredResource | None, *, if_match: str | None = None
    ) -> None:
        """Write the current-version row now (so conflicts surface at once); history and index
        rows go straight in, or into the buffer when writes are deferred."""
        stored = pending.stored
        if not self.guard.unrestricted:
            self._authorise_write(pending, previous)
        self.written += 1
        if self.context.audited:
            self.audit.append(write_record(self.context, stored, pending.method, previous))
        values = {
            "version_id": stored.version_id,
            "last_updated": stored.last_updated,
            "deleted": stored.deleted,
            "content": stored.content,
        }
        if stored.resource_type == "Consent":
            bump_consent_generation(self.connection)  # in this transaction (see consent_rules)
        if previous is None and pending.insert_current and self._buffer is not None:
            # A fresh UUID cannot collide, so the row can wait for the batched flush.
            self._buffer.versions.append(pending)
            return
        pending.insert_current = False  # written right here instead
        if previous is None:
            # ON CONFLICT DO NOTHING instead of a savepoint: one round trip, same guarantee.
            # (RETURNING, because psycopg reports no rowcount for this statement.)
            dialect_insert = postgresql.insert if is_postgres(self.connection) else sqlite.insert
            inserted = self.connection.execute(
                dialect_insert(resource)
                .values(resource_type=stored.resource_type, id=stored.id, **values)
                .on_conflict_do_nothing()
                .returning(resource.c.id)
            ).first()
            if inserted is None:
                raise Conflict(
                    f"{stored.resource_type}/{stored.id} was created concurrently; retry the request"
                )
        else:
            result = self.connection.execute(
                update(resource)
                .where(
                    and_(
                        resource.c.resource_type == stored.resource_type,
                        resource.c.id == stored.id,
                        resource.c.version_id == previous.version_id,
                    )
                )
                .values(**values)
            )
            if result.rowcount != 1 and if_match is not None:
                # Another writer committed after our If-Match check (PostgreSQL READ COMMITTED
                # re-reads the row once its lock is free): the named version is stale, so 412
                # as for any stale If-Match (https://hl7.org/fhir/R4/http.html#concurrency).
                raise PreconditionFailed(
                    f"If-Match names version {previous.version_id} of {stored.resource_type}/{stored.id}, "
                    "which another request has just replaced"
                )
            if result.rowcount != 1:
                raise Conflict(
                    f"{stored.resource_type}/{stored.id} was changed concurrently; re-read and retry"
                )
        if self._buffer is not None:
            self._buffer.versions.append(pending)
        else:
            self._insert_history_and_index([pending])

    def _authorise_write(self, pending: _PendingVersion, previous: StoredResource | None) -> None:
        """Role and scope, security labels (checklist Z4) and whose record the new version is in."""
        stored = pending.stored
        resource_type = stored.resource_type
        if stored.deleted:
            interaction: Interaction = "delete"
        elif previous is None or previous.deleted:
            interaction = "create"
        else:
            interaction = "update"
        self.guard.require(interaction, resource_type)
        if stored.deleted:
            return
        before = security_labels(previous.content) if previous is not None and previous.content else set()
        if security_labels(stored.content) != before and not self.guard.may_label():
            raise Forbidden("Your role may not set or change security labels (meta.security)")
        if pending.index_rows is None:
            return
        if resource_type not in self.guard.policy.clinical_types:
            # Outside the Patient compartment (Task: a refill request) the compartment cannot say
            # whose it is; from one record, a write may still only name that record's patient.
            if self.guard.role is not None and self.guard.role.patients == "own":
                named = {
                    row["target_id"]
                    for row in pending.index_rows.dicts("reference")
                    if row["param"] == "patient" and row.get("target_type") == "Patient"
                }
                if named != {self.context.patient}:  # naming no patient is not belonging either
                    raise Forbidden(f"A {resource_type} written from this record must belong to it")
            return
        patients = compartment_patients(
            self.definitions, resource_type, stored.id, pending.index_rows, self.settings.base_url
        )
        if resource_type == "Patient" and interaction == "create":
            patients.discard(stored.id)  # registering a new patient
        if self.guard.role is not None and self.guard.role.patients == "own":
            if patients != {self.context.patient}:
                raise Forbidden(f"A {resource_type} written from this record must belong to it")
        elif not self.guard.patients_reached(self.connection, patients):
            raise Forbidden(f"This {resource_type} belongs to a record outside your care relationships")

    def _insert_history_and_index(self, pending: list[_PendingVersion]) -> None:
        replaced = [p for p in pending if p.replace_index]
        if replaced:
            for table in INDEX_TABLES.values():
                self.connection.execute(
                    delete(table).where(
                        table.c.resource_type == bindparam("rtype"),
                        table.c.resource_id == bindparam("rid"),
                    ),
                    [{"rtype": p.stored.resource_type, "rid": p.stored.id} for p in replaced],
                )
        insert_versions(
            self.connection,
            fresh=[p.stored for p in pending if p.insert_current],
            versions=[(p.stored, p.method, p.index_rows) for p in pending],
        )
