"""Plain values the messaging services hand to pages, and the wording both sides share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from garrison.beneficiaries.vocabulary import BASE

PoolKind = Literal["team", "clinic", "triage", "unrouted"]
Side = Literal["patient", "staff"]
EventKind = Literal["moved", "closed", "reopened"]

REPLY_BUSINESS_DAYS = 3
REPLY_EXPECTATION = f"Your care team usually replies within {REPLY_BUSINESS_DAYS} business days."
EMERGENCY_NOTICE = "If this is an emergency, call 911 or go to the nearest emergency room."
# Every Communication the portal writes carries this category, so the record (and a FHIR client)
# can tell secure messages from other communications.
CATEGORY_SYSTEM = f"{BASE}/CodeSystem/communication-category"
SECURE_MESSAGE = "secure-message"
UNROUTED_QUEUE = "Unrouted patient messages"
NEW_MESSAGE_NOTICE = "You have a new message in the Garrison portal"
MAX_SUBJECT = 120
MAX_BODY = 10_000
_KINDS = {
    "application/pdf": "PDF",
    "image/png": "PNG image",
    "image/jpeg": "JPEG image",
    "text/plain": "text",
}


def triage_queue(facility_name: str) -> str:
    """The named pool that catches a facility's messages no team or clinic could take."""
    return f"Patient messaging triage, {facility_name}"


@dataclass(frozen=True, slots=True)
class Choice:
    """Somewhere a patient may write to: their primary care team, or a clinic they were seen in."""

    reference: str  # CareTeam/1, HealthcareService/2 or Organization/3
    label: str
    kind: Literal["team", "clinic"]
    note: str | None = None  # shown beside the choice (e.g. the team is being reassigned)


@dataclass(frozen=True, slots=True)
class Destination:
    """The staff pool a new thread lands in."""

    kind: PoolKind
    reference: str | None
    name: str
    facility: str | None  # the Organization whose staff work the pool; None: enterprise-wide
    note: str | None = None  # why the message did not reach the chosen team or clinic


@dataclass(frozen=True, slots=True)
class Pool:
    """A named staff pool as it was at some moment (see `history.pool_at`)."""

    kind: PoolKind
    reference: str | None
    name: str
    note: str | None = None  # why the first message did not reach the chosen team or clinic


@dataclass(frozen=True, slots=True)
class PoolGroup:
    """Pools staff may move a conversation to, grouped as the move chooser shows them."""

    label: str
    pools: list[Destination]


@dataclass(frozen=True, slots=True)
class ThreadEvent:
    """Something staff did to a conversation: moved it to another pool, closed or reopened it.
    Kept on the thread's first Communication (see `history`)."""

    kind: EventKind
    at: str  # ISO-8601 UTC, the same fixed-width text as message times
    by: str  # the staff member's name
    by_reference: str | None
    source: Pool | None = None  # moves only: where it was
    target: Pool | None = None  # moves only: where it went

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.at)

    @property
    def staff_words(self) -> str:
        if self.kind == "moved" and self.source is not None and self.target is not None:
            return f"Moved from {self.source.name} to {self.target.name} by {self.by}"
        return f"{'Closed' if self.kind == 'closed' else 'Reopened'} by {self.by}"


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    index: int  # position among the message's attachments (the download URL uses it)
    title: str
    content_type: str
    size: int

    @property
    def kind(self) -> str:
        return _KINDS.get(self.content_type, "file")

    @property
    def size_text(self) -> str:
        if self.size >= 1024 * 1024:
            return f"{self.size / (1024 * 1024):.1f} MB"
        if self.size >= 1024:
            return f"{self.size / 1024:.0f} KB"
        return f"{self.size} bytes"


@dataclass(frozen=True, slots=True)
class DeliveryStep:
    label: str
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    side: Side
    sender_name: str
    sent: datetime
    body: str
    attachments: list[AttachmentInfo]
    steps: list[DeliveryStep]  # sent → delivered/routed → moved → read → replied, as far as it got
    new: bool  # the viewer's side had not seen it before this visit
    confidential: bool = False  # labelled adolescent-confidential: a parent's proxy access never sees it

    @property
    def state(self) -> str:
        return self.steps[-1].label if self.steps else ""

    @property
    def paragraphs(self) -> list[list[str]]:
        """The text as paragraphs of lines, so pages keep the writer's line breaks without
        inline styles or unescaped markup."""
        blocks = [b for b in self.body.replace("\r\n", "\n").split("\n\n") if b.strip()]
        return [block.strip("\n").split("\n") for block in blocks]


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """One row of `message_thread`, typed."""

    id: str
    patient_id: str
    requested_ref: str
    requested_name: str
    pool_kind: PoolKind
    pool_ref: str | None
    pool_name: str
    facility: str | None
    route_note: str | None
    started_by: str
    status: str
    assignee: str | None
    assignee_name: str | None
    message_count: int
    created: str
    last_message_at: str
    last_patient_at: str | None
    last_staff_at: str | None
    patient_read_at: str | None
    patient_read_by: str | None
    staff_read_at: str | None
    staff_read_by: str | None
    closed_at: str | None
    closed_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> ThreadRow:
        return cls(**{name: row._mapping[name] for name in cls.__dataclass_fields__})

    @property
    def unread_by_patient(self) -> bool:
        return self.last_staff_at is not None and (
            self.patient_read_at is None or self.patient_read_at < self.last_staff_at
        )

    @property
    def unread_by_staff(self) -> bool:
        return self.last_patient_at is not None and (
            self.staff_read_at is None or self.staff_read_at < self.last_patient_at
        )

    @property
    def awaiting_reply(self) -> bool:
        """The patient side wrote last and the care team has not answered yet."""
        return (
            self.status == "open"
            and self.last_patient_at is not None
            and (self.last_staff_at is None or self.last_staff_at < self.last_patient_at)
        )


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    id: str
    subject: str
    row: ThreadRow
    unread: bool  # for the viewer's side
    patient_name: str | None = None  # staff lists only
    confidential: bool = False  # the conversation is adolescent-confidential

    @property
    def last_message_at(self) -> datetime:
        return datetime.fromisoformat(self.row.last_message_at)


@dataclass(frozen=True, slots=True)
class ThreadView:
    id: str
    subject: str
    row: ThreadRow
    messages: list[MessageView]
    patient_name: str | None = None
    reply_due: date | None = None  # while the patient side waits for an answer
    can_reply: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    confidential: bool = False  # the conversation is adolescent-confidential
    history: list[ThreadEvent] = field(default_factory=list)  # staff pages: moves, closes, reopens
    first_pool: Pool | None = None  # where the first message was delivered (before any move)
    destinations: list[PoolGroup] = field(default_factory=list)  # staff pages: where it may move to
    follows: tuple[str, str] | None = None  # (thread id, subject) of the closed conversation it follows up

    @property
    def moved(self) -> bool:
        """Staff moved it since the first message was delivered."""
        first = self.first_pool
        return first is not None and (first.kind, first.reference) != (self.row.pool_kind, self.row.pool_ref)

    @property
    def follow_up_to(self) -> str:
        """Whom a follow-up is addressed to (`routing.follow_up_destination`)."""
        return self.row.pool_name if self.row.pool_kind in ("team", "clinic") else self.row.requested_name

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.row.created)

    @property
    def pool_key(self) -> str:
        """The current pool, as the move form names it (a move checks nobody moved it meanwhile)."""
        return pool_key_of(self.row.pool_kind, self.row.pool_ref)


def pool_key_of(kind: str, reference: str | None) -> str:
    return f"{kind}:{reference or ''}"


def reply_due(sent: datetime, business_days: int = REPLY_BUSINESS_DAYS) -> date:
    """The day a reply is expected by: `business_days` weekdays after the day it was sent
    (federal holidays are not counted out)."""
    day = sent.date()
    counted = 0
    while counted < business_days:
        day += timedelta(days=1)
        if day.weekday() < 5:
            counted += 1
    return day
