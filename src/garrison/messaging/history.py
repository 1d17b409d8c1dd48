"""What staff did to a conversation (moved it to another pool, closed it, reopened it), kept in
the FHIR record itself: each event is a `note` Annotation on the thread's first Communication
(https://hl7.org/fhir/R4/communication-definitions.html#Communication.note, "notes or commentary
about the communication by the sender, receiver or other interested parties") with the staff
member as `authorReference`, the `time`, the event in plain words as `text`, and a Garrison
extension holding the event's kind and, for a move, the pools it left and entered. A move also
sets the Communication's `recipient` to the pool that now holds it, so the record says where the
message is.

Why not a table: the record then answers "where did this message go, and who sent it on?" for
any FHIR client, version by version (the Communication's history), with no new table to keep in
step; the `message_thread` row keeps only the current state. The notes name staff and pools,
which the patient sees anyway (staff sign their replies, the portal shows the pool).
"""

from __future__ import annotations

from typing import Any

from garrison.beneficiaries.vocabulary import BASE
from garrison.fhir.repository import Repository
from garrison.messaging.model import EventKind, Pool, PoolKind, ThreadEvent, ThreadRow

EVENT_EXTENSION = f"{BASE}/StructureDefinition/message-thread-event"
_EVENT_KINDS: frozenset[str] = frozenset({"moved", "closed", "reopened"})
_POOL_KINDS: frozenset[str] = frozenset({"team", "clinic", "triage", "unrouted"})


def record(
    repo: Repository, thread_id: str, event: ThreadEvent, *, recipients: list[dict[str, str]] | None = None
) -> None:
    """Add `event` to the thread's first Communication through the caller's Repository (so the
    access policy decides whether they may), and set its recipients when given. The version
    read is the one replaced (If-Match): a concurrent change fails rather than being lost.
    https://hl7.org/fhir/R4/http.html#concurrency"""
    stored = repo.read("Communication", thread_id)
    root = stored.parsed()
    root["note"] = [*(root.get("note") or []), _annotation(event)]
    if recipients is not None:
        root["recipient"] = recipients
    repo.update("Communication", thread_id, root, if_match=f'W/"{stored.version_id}"')


def events_of(root: dict[str, Any]) -> list[ThreadEvent]:
    """The thread's events, oldest first (notes without Garrison's extension are not events)."""
    found: list[ThreadEvent] = []
    for note in root.get("note") or []:
        event = _event(note)
        if event is not None:
            found.append(event)
    return sorted(found, key=lambda e: e.at)


def current_pool(row: ThreadRow) -> Pool:
    return Pool(row.pool_kind, row.pool_ref, row.pool_name, row.route_note)


def pool_at(row: ThreadRow, events: list[ThreadEvent], moment: str) -> Pool:
    """The pool that held the thread at `moment`: the source of the first move after it, or the
    current pool when it has not moved since."""
    for event in events:
        if event.kind == "moved" and event.at > moment and event.source is not None:
            return event.source
    return current_pool(row)


def moves_after(events: list[ThreadEvent], moment: str) -> list[ThreadEvent]:
    return [e for e in events if e.kind == "moved" and e.at > moment and e.target is not None]


# ------------------------------------------------------------------------------- encoding


def _annotation(event: ThreadEvent) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "kind", "valueCode": event.kind}]
    if event.source is not None:
        parts.extend(_pool_parts("from", event.source))
    if event.target is not None:
        parts.extend(_pool_parts("to", event.target))
    author: dict[str, str] = {"display": event.by[:200]}
    if event.by_reference:
        author = {"reference": event.by_reference, **author}
    return {
        "authorReference": author,
        "time": event.at,
        "text": f"{event.staff_words}.",
        "extension": [{"url": EVENT_EXTENSION, "extension": parts}],
    }


def _pool_parts(prefix: str, pool: Pool) -> list[dict[str, Any]]:
    reference: dict[str, str] = {"display": pool.name[:200]}
    if pool.reference:
        reference = {"reference": pool.reference, **reference}
    parts: list[dict[str, Any]] = [
        {"url": f"{prefix}Kind", "valueCode": pool.kind},
        {"url": f"{prefix}Pool", "valueReference": reference},
    ]
    if pool.note:
        parts.append({"url": f"{prefix}Note", "valueString": pool.note[:200]})
    return parts


def _event(note: Any) -> ThreadEvent | None:
    if not isinstance(note, dict):
        return None
    extension = next(
        (e for e in note.get("extension") or [] if isinstance(e, dict) and e.get("url") == EVENT_EXTENSION),
        None,
    )
    if extension is None:
        return None
    parts = {p.get("url"): p for p in extension.get("extension") or [] if isinstance(p, dict)}
    kind = (parts.get("kind") or {}).get("valueCode")
    at = note.get("time")
    if kind not in _EVENT_KINDS or not isinstance(at, str):
        return None
    author = note.get("authorReference") or {}
    event_kind: EventKind = kind
    return ThreadEvent(
        kind=event_kind,
        at=at,
        by=str(author.get("display") or "Staff"),
        by_reference=author.get("reference"),
        source=_pool(parts, "from"),
        target=_pool(parts, "to"),
    )


def _pool(parts: dict[Any, dict[str, Any]], prefix: str) -> Pool | None:
    kind = (parts.get(f"{prefix}Kind") or {}).get("valueCode")
    reference = (parts.get(f"{prefix}Pool") or {}).get("valueReference") or {}
    if kind not in _POOL_KINDS:
        return None
    pool_kind: PoolKind = kind
    note = (parts.get(f"{prefix}Note") or {}).get("valueString")
    return Pool(pool_kind, reference.get("reference"), str(reference.get("display") or ""), note)
