"""The patient's side of secure messaging: write to a care team, read threads, reply, download.

Every function takes a Repository bound to the portal user's AccessContext, whose `patient` is
the record in view: the patient's own, or a family member's that a proxy acts for. The access
policy lets patients and proxies create Communications in that record only; a proxy's message
records the proxy (their RelatedPerson) as the sender, never the patient.

A closed conversation takes no more replies. As in MHS GENESIS and MyChart, the patient writes a
follow-up instead (`follow_up`): a new conversation whose first message answers the closed one
(`inResponseTo`), delivered to the team or clinic that last held the closed one (where staff may
have moved it), so it reaches the same people without reopening a matter the care team closed.
Staff can reopen a closed conversation themselves (`inbox.reopen_thread`).

Messages a 13 to 17-year-old writes from their own account are adolescent-confidential
(`confidential`): a parent's proxy access sees neither them nor their counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from garrison.callers import proxy_grants
from garrison.errors import BadRequest, Conflict, Forbidden, GarrisonError, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.messaging import attachments, confidential, history, routing, store
from garrison.messaging.attachments import Upload
from garrison.messaging.model import (
    Choice,
    Destination,
    ThreadRow,
    ThreadSummary,
    ThreadView,
    reply_due,
)
from garrison.messaging.tables import message_thread

MAX_THREADS = 200


@dataclass(frozen=True, slots=True)
class Sent:
    """A new thread: where it went and when a reply is expected."""

    thread_id: str
    destination: Destination
    reply_due: date


def compose_choices(repo: Repository) -> list[Choice]:
    """Whom the patient in view may write to (see `routing`)."""
    return routing.message_choices(repo)


def check_new_message(
    repo: Repository, *, to: str, subject: str, body: str, uploads: list[Upload] | None = None
) -> dict[str, str]:
    """What is wrong with a new message, by form field (`to`, `subject`, `body`, `attachments`);
    empty when it can be sent. Writes nothing, so a page can show the form again."""
    errors: dict[str, str] = {}
    try:
        routing.resolve_choice(repo, to)
    except BadRequest as error:
        errors["to"] = error.message
    try:
        store.check_text(subject, "-")
    except BadRequest as error:
        errors["subject"] = error.message
    errors.update(check_reply(body, uploads))
    return errors


def check_follow_up(subject: str, body: str, uploads: list[Upload] | None = None) -> dict[str, str]:
    """What is wrong with a follow-up's subject, text or files, by form field."""
    errors: dict[str, str] = {}
    try:
        store.check_text(subject, "-")
    except BadRequest as error:
        errors["subject"] = error.message
    errors.update(check_reply(body, uploads))
    return errors


def check_reply(body: str, uploads: list[Upload] | None = None) -> dict[str, str]:
    """What is wrong with a reply's text or files, by form field (`body`, `attachments`)."""
    errors: dict[str, str] = {}
    try:
        store.check_text(None, body)
    except BadRequest as error:
        errors["body"] = error.message
    try:
        attachments.check_uploads(uploads or [])
    except BadRequest as error:
        errors["attachments"] = error.message
    return errors


def start_thread(
    repo: Repository, *, to: str, subject: str, body: str, uploads: list[Upload] | None = None
) -> Sent:
    """Send a new message to the team or clinic `to` (a reference from `compose_choices`).
    Everything is checked before anything is written; the message and its thread row commit
    together, so a message exists only with the pool it was delivered to."""
    patient = routing.patient_in_view(repo)
    title, text = store.check_text(subject, body)
    files = attachments.check_uploads(uploads or [])
    choice = routing.resolve_choice(repo, to)
    destination = routing.route(repo, choice)
    return _start(repo, patient, choice, destination, title=title or "", text=text, files=files, follows=None)


def follow_up(
    repo: Repository, thread_id: str, *, subject: str, body: str, uploads: list[Upload] | None = None
) -> Sent:
    """A new conversation following up the closed one `thread_id`, delivered where that one was
    last held (see the module doc); Conflict while it is still open (reply to it instead)."""
    row = _own_row(repo, thread_id)
    store.read_root(repo, thread_id)  # the caller may see it (NotFound, before saying anything else)
    if row.status == "open":
        raise Conflict("This conversation is still open: reply to it instead.")
    title, text = store.check_text(subject, body)
    files = attachments.check_uploads(uploads or [])
    choice, destination = routing.follow_up_destination(repo, row)
    return _start(
        repo, row.patient_id, choice, destination, title=title or "", text=text, files=files, follows=row.id
    )


def default_follow_up_subject(subject: str) -> str:
    words = subject if subject.lower().startswith("follow-up:") else f"Follow-up: {subject}"
    return words[:120]


def _start(
    repo: Repository,
    patient: str,
    choice: Choice,
    destination: Destination,
    *,
    title: str,
    text: str,
    files: list[attachments.CheckedFile],
    follows: str | None,
) -> Sent:
    sender, writer = patient_side_sender(repo)
    at = store.stamp()
    thread_id = store.write_message(
        repo,
        patient_id=patient,
        sender=sender,
        recipients=store.recipients(choice.reference, choice.label, destination.reference, destination.name),
        subject=title,
        body=text,
        files=files,
        at=at,
        in_response_to=follows,
        adolescent=confidential.writes_in_confidence(repo),
    )
    store.insert_row(
        repo.connection,
        thread_id=thread_id,
        patient_id=patient,
        requested_ref=choice.reference,
        requested_name=choice.label,
        destination=destination,
        started_by=sender["reference"],
        writer=writer,
        at=at,
    )
    return Sent(thread_id, destination, reply_due(datetime.fromisoformat(at)))


def patient_threads(repo: Repository) -> list[ThreadSummary]:
    """The record's conversations, latest activity first, with "new reply" markers. A thread
    whose first message the caller may not see (e.g. a proxy and an adolescent-confidential
    message) is left out."""
    patient = routing.patient_in_view(repo)
    c = message_thread.c
    rows = [
        ThreadRow.from_row(r)
        for r in repo.connection.execute(
            select(message_thread)
            .where(c.patient_id == patient)
            .order_by(c.last_message_at.desc(), c.id)
            .limit(MAX_THREADS)
        )
    ]
    roots = visible_roots(repo, [r.id for r in rows])
    rows = [r for r in rows if r.id in roots]
    if rows and confidential.hides_confidential(repo):
        # A parent's proxy access: counts, times and "new reply" from the messages it may see.
        children = _visible_replies(repo, [r.id for r in rows])
        rows = [
            confidential.visible_row(r, [roots[r.id], *children.get(r.id, [])], store.message_side)
            for r in rows
        ]
        rows.sort(key=lambda r: (r.last_message_at, r.id), reverse=True)
    return [
        ThreadSummary(
            r.id,
            store.subject_of(roots[r.id]),
            r,
            unread=r.unread_by_patient,
            confidential=confidential.is_confidential(repo, roots[r.id]),
        )
        for r in rows
    ]


def unread_count(repo: Repository) -> int:
    """Conversations with a reply the patient side has not opened yet (for the portal's menu)."""
    return sum(1 for summary in patient_threads(repo) if summary.unread)


def open_thread(repo: Repository, thread_id: str) -> ThreadView:
    """One conversation with every message's delivery state; marks it read by the patient side."""
    row = _own_row(repo, thread_id)
    root = store.read_root(repo, thread_id)
    messages = store.thread_messages(repo, root)
    if confidential.hides_confidential(repo):
        row = confidential.visible_row(row, messages, store.message_side)
    _, reader = patient_side_sender(repo)
    before = row.patient_read_at
    row = store.mark_read(repo.connection, row, "patient", reader)
    events = history.events_of(root)
    due = (
        reply_due(datetime.fromisoformat(row.last_patient_at))
        if row.awaiting_reply and row.last_patient_at
        else None
    )
    return ThreadView(
        id=row.id,
        subject=store.subject_of(root),
        row=row,
        messages=store.message_views(repo, row, messages, "patient", before, events=events),
        reply_due=due,
        can_reply=row.status == "open",
        confidential=confidential.is_confidential(repo, root),
        first_pool=history.pool_at(row, events, row.created),
        follows=store.followed_thread(repo, root, row.patient_id),
    )


def reply(repo: Repository, thread_id: str, *, body: str, uploads: list[Upload] | None = None) -> None:
    """Add the patient side's reply to an open conversation (Conflict once it is closed)."""
    row = _own_row(repo, thread_id)
    root = store.read_root(repo, thread_id)  # NotFound for a conversation the caller may not see
    if row.status != "open":
        raise Conflict("This conversation has been closed. Send a follow-up instead.")
    _, text = store.check_text(None, body)
    files = attachments.check_uploads(uploads or [])
    latest = store.thread_messages(repo, root)[-1]
    sender, writer = patient_side_sender(repo)
    at = store.stamp()
    store.write_message(
        repo,
        patient_id=row.patient_id,
        sender=sender,
        recipients=store.recipients(row.requested_ref, row.requested_name, row.pool_ref, row.pool_name),
        subject=store.subject_of(root),
        body=text,
        files=files,
        at=at,
        thread_id=row.id,
        in_response_to=str(latest["id"]),
        adolescent=confidential.writes_in_confidence(repo),
    )
    store.record_message(repo.connection, row, "patient", at, writer)


def attachment(repo: Repository, thread_id: str, message_id: str, index: int) -> attachments.AttachmentFile:
    """An attachment of one of the record's conversations."""
    _own_row(repo, thread_id)
    root = store.read_root(repo, thread_id)
    return store.thread_attachment(repo, root, message_id, index)


def patient_side_sender(repo: Repository) -> tuple[dict[str, str], str]:
    """The sender reference and name for the patient side: the Patient when patients write for
    themselves, the proxy's RelatedPerson (https://hl7.org/fhir/R4/relatedperson.html) when a
    proxy writes for the patient in view."""
    context = repo.context
    patient = routing.patient_in_view(repo)
    if context.role == "patient":
        name = store.display_name(_read(repo, "Patient", patient), "Patient")
        return {"reference": f"Patient/{patient}", "display": name}, name
    related: str | None = None
    if context.account is not None:
        grants = proxy_grants(repo.connection, repo.definitions, repo.settings, context.account)
        related = next((g.related_person_id for g in grants if g.patient_id == patient), None)
    if related is None and context.actor.startswith("RelatedPerson/"):
        related = context.actor.removeprefix("RelatedPerson/")
    if related is None:
        raise Forbidden("You do not act for this person")
    name = store.display_name(_read(repo, "RelatedPerson", related), "Family member")
    return {"reference": f"RelatedPerson/{related}", "display": name}, name


def visible_roots(repo: Repository, thread_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The first messages of these threads that the caller may see, by thread id."""
    if not thread_ids:
        return {}
    page = repo.search(
        SearchRequest("Communication", [("_id", ",".join(thread_ids)), ("_count", str(len(thread_ids)))])
    )
    return {m.id: m.parsed() for m in page.matches}


def _own_row(repo: Repository, thread_id: str) -> ThreadRow:
    patient = routing.patient_in_view(repo)
    row = store.get_row(repo.connection, thread_id)
    if row is None or row.patient_id != patient:
        raise NotFound("There is no such conversation, or it is not one you may open.")
    return row


def _visible_replies(repo: Repository, thread_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The later messages of these threads that the caller may see, by thread, oldest first."""
    page = repo.search(
        SearchRequest(
            "Communication",
            [
                ("part-of", ",".join(f"Communication/{i}" for i in thread_ids)),
                ("_count", "1000"),
                ("_sort", "sent"),
            ],
        )
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for match in page.matches:
        message = match.parsed()
        for ref in message.get("partOf") or []:
            thread = str(ref.get("reference", "")).removeprefix("Communication/")
            if thread in thread_ids:
                found.setdefault(thread, []).append(message)
    return found


def _read(repo: Repository, resource_type: str, resource_id: str) -> dict[str, Any] | None:
    try:
        return repo.read(resource_type, resource_id).parsed()
    except GarrisonError:
        return None
