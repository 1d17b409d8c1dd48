"""The outbox: enqueue in the caller's transaction, deliver later through a `Sender`.

Delivery is at-least-once: a row is marked sent only after its sender returns, so a crash in
between sends it again on the next run. Senders are pluggable; the default writes JSON lines to
`<data_dir>/outbox.jsonl` (no mail server in the embedded default), and a real deployment plugs
in an SMTP or SMS gateway sender with the same interface.

What goes in a message is decided by the caller and kept free of clinical detail: email and SMS
are not secure channels, so messages say that something is waiting in the portal, or give an
appointment's time and place, and nothing more.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from sqlalchemy import Connection, Engine, select, update

from garrison import clock
from garrison.db.engine import write_transaction
from garrison.fhir.resource import format_instant
from garrison.notifications.tables import outbox_message

log = logging.getLogger(__name__)
Channel = Literal["email", "sms"]
MAX_ATTEMPTS = 5
OUTBOX_FILE = "outbox.jsonl"  # the FileSender's file in the data directory
RETRY_AFTER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: str
    channel: Channel
    recipient: str
    subject: str
    body: str
    kind: str
    patient: str | None
    reference: str | None
    send_after: datetime
    status: str
    attempts: int


class Sender(Protocol):
    """Delivers one message; raises to report a failure (the row is retried later)."""

    def send(self, message: OutboxMessage) -> None: ...


class FileSender:
    """Appends each message as one JSON line to a file (the default: demo and tests read it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, message: OutboxMessage) -> None:
        line = {
            "id": message.id,
            "channel": message.channel,
            "to": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "kind": message.kind,
            "sent": format_instant(clock.now()),
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")


class LogSender:
    """Logs that a message went, without its body or recipient (logs carry no PHI)."""

    def send(self, message: OutboxMessage) -> None:
        log.info("outbox: sent %s %s message %s", message.channel, message.kind, message.id)


def enqueue(
    connection: Connection,
    *,
    channel: Channel,
    to: str,
    subject: str,
    body: str,
    kind: str,
    patient: str | None = None,
    reference: str | None = None,
    send_after: datetime | None = None,
) -> str:
    """Queue a message in the caller's transaction; returns its id."""
    if channel not in ("email", "sms"):
        raise ValueError(f"unknown channel {channel!r}")
    if not to.strip():
        raise ValueError("a message needs a recipient")
    now = clock.now()
    message_id = secrets.token_hex(16)
    connection.execute(
        outbox_message.insert().values(
            id=message_id,
            channel=channel,
            recipient=to.strip()[:320],
            subject=subject[:200],
            body=body,
            kind=kind[:64],
            patient=patient,
            reference=reference,
            created=format_instant(now),
            send_after=format_instant(send_after or now),
            status="pending",
            attempts=0,
        )
    )
    return message_id


def cancel(connection: Connection, *, reference: str, kind: str | None = None) -> int:
    """Cancel pending messages about `reference` (e.g. the reminder of a cancelled appointment)."""
    c = outbox_message.c
    query = update(outbox_message).where(c.reference == reference, c.status == "pending")
    if kind is not None:
        query = query.where(c.kind == kind)
    return connection.execute(query.values(status="cancelled")).rowcount


def pending(
    connection: Connection, *, reference: str | None = None, patient: str | None = None
) -> list[OutboxMessage]:
    """Pending messages, oldest first, optionally about one thing or one patient."""
    c = outbox_message.c
    query = select(outbox_message).where(c.status == "pending")
    if reference is not None:
        query = query.where(c.reference == reference)
    if patient is not None:
        query = query.where(c.patient == patient)
    return [_message(row) for row in connection.execute(query.order_by(c.send_after, c.id))]


def deliver_due(engine: Engine, sender: Sender, *, limit: int = 100) -> int:
    """Send pending messages whose time has come; returns how many were sent."""
    now = clock.now()
    c = outbox_message.c
    with write_transaction(engine) as connection:
        rows = connection.execute(
            select(outbox_message)
            .where(c.status == "pending", c.send_after <= format_instant(now))
            .order_by(c.send_after, c.id)
            .limit(limit)
        ).all()
    sent = 0
    for message in (_message(row) for row in rows):
        try:
            sender.send(message)
        except Exception as failure:  # a sender's failure is recorded and retried, never fatal
            _failed(engine, message, type(failure).__name__)
            continue
        with write_transaction(engine) as connection:
            connection.execute(
                update(outbox_message)
                .where(c.id == message.id, c.status == "pending")
                .values(status="sent", sent_at=format_instant(clock.now()), attempts=message.attempts + 1)
            )
        sent += 1
    return sent


def _failed(engine: Engine, message: OutboxMessage, reason: str) -> None:
    attempts = message.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "last_error": reason[:200]}
    if attempts >= MAX_ATTEMPTS:
        values["status"] = "failed"
    else:
        values["send_after"] = format_instant(clock.now() + RETRY_AFTER * attempts)
    with write_transaction(engine) as connection:
        connection.execute(update(outbox_message).where(outbox_message.c.id == message.id).values(**values))
    log.warning("outbox: %s message %s failed (%s), attempt %d", message.kind, message.id, reason, attempts)


def _message(row: object) -> OutboxMessage:
    mapping = row._mapping  # type: ignore[attr-defined]
    return OutboxMessage(
        id=mapping["id"],
        channel=mapping["channel"],
        recipient=mapping["recipient"],
        subject=mapping["subject"],
        body=mapping["body"],
        kind=mapping["kind"],
        patient=mapping["patient"],
        reference=mapping["reference"],
        send_after=datetime.fromisoformat(mapping["send_after"]),
        status=mapping["status"],
        attempts=mapping["attempts"],
    )


def sent_messages(path: Path) -> Sequence[dict[str, str]]:
    """What a FileSender wrote (the demo's "mailbox"; tests read it)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
