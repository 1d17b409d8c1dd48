"""Adolescent confidentiality in secure messaging.

From 13 to 17 a parent's proxy access is limited: what a teenager tells their care team in
confidence is hidden from the parent, and so is how much of it there is (the portal's family
rules, `garrison.callers.proxy_grants`). The data layer already hides resources labelled ADOL
(Garrison's security label, `[labels] ADOL` in the access policy) from the proxy role, in reads,
searches and counts. So messaging labels:

- every message a patient aged 13 to 17 writes from their own account (never a proxy's message:
  that is the parent's own words), with their age on the day they write
  (`garrison.beneficiaries.ages.age_on`);
- every staff reply in a conversation whose first message is labelled, and every reply to a
  labelled message (an answer is as confidential as the question);
- the attachments' Binaries, as defence in depth (they are reached only through the message).

The subject line lives in the Communications (`topic.text`); the thread row holds no text, and
a thread is listed only when its first message is visible, so a proxy learns nothing of a
confidential conversation. Where a teenager writes into a conversation their parent started, the
parent still sees the conversation but not those messages: `visible_row` recomputes the row's
counts and times from the messages the caller may see, so "new reply" markers and unread counts
do not give them away either.

Patients and most staff roles may not set security labels (`label_resources` in the policy), so
the labelled message is written through a Repository bound to the caller's own context whose
guard additionally allows labelling: every other check (role, scopes, whose record) is the
caller's, and the audit record names the caller. Only this module does that, only with the ADOL
label, and only on messages it builds itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from garrison.beneficiaries.ages import age_on
from garrison.callers import ADOLESCENT_AGE, ADULT_AGE
from garrison.clock import now
from garrison.errors import GarrisonError
from garrison.fhir.authz.guard import Guard
from garrison.fhir.authz.policy import policy_from
from garrison.fhir.repository import Repository
from garrison.messaging.model import ThreadRow

LABEL_NAME = "ADOL"
LABEL_DISPLAY = "adolescent confidential"


def label(repo: Repository) -> dict[str, str]:
    """The ADOL security label as a Coding, as the access policy defines it."""
    system, code = policy_from(repo.definitions).labels[LABEL_NAME]
    return {"system": system, "code": code, "display": LABEL_DISPLAY}


def is_confidential(repo: Repository, resource: dict[str, Any] | None) -> bool:
    wanted = policy_from(repo.definitions).labels[LABEL_NAME]
    security = ((resource or {}).get("meta") or {}).get("security") or []
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == wanted for c in security)


def writes_in_confidence(repo: Repository) -> bool:
    """Whether the caller is a patient aged 13 to 17 writing from their own account today."""
    context = repo.context
    patient = context.patient
    if context.role != "patient" or patient is None or context.actor != f"Patient/{patient}":
        return False
    try:
        born = repo.read("Patient", patient).parsed().get("birthDate")
    except GarrisonError:
        return False
    age = age_on(born, now().date())
    return age is not None and ADOLESCENT_AGE <= age < ADULT_AGE


def hides_confidential(repo: Repository) -> bool:
    """Whether the caller's role never sees ADOL-labelled items (a parent's proxy access)."""
    role = repo.guard.role
    wanted = policy_from(repo.definitions).labels[LABEL_NAME]
    return role is not None and wanted in role.withheld_labels


def create_labelled(repo: Repository, resource: dict[str, Any], resource_id: str) -> None:
    """Create `resource` with the ADOL label added, as the caller (see the module doc)."""
    body = dict(resource)
    meta = dict(body.get("meta") or {})
    meta["security"] = [*(meta.get("security") or []), label(repo)]
    body["meta"] = meta
    repo.flush()
    labelling = Repository(repo.connection, repo.definitions, repo.settings, repo.context)
    labelling.guard = _LabellingGuard(repo.definitions, repo.settings, repo.context, repo.connection)
    try:
        labelling.create(body, assigned_id=resource_id)
    finally:
        repo.audit.extend(labelling.audit)
        repo.written += labelling.written


def visible_row(
    row: ThreadRow, messages: list[dict[str, Any]], side_of: Callable[[dict[str, Any]], str]
) -> ThreadRow:
    """The row as the caller's visible `messages` (oldest first) tell it: count, last message
    and each side's latest message. `side_of(message)` says whose side wrote it."""
    if not messages:
        return row
    times = [str(m.get("sent", "")) for m in messages]
    patient = [t for m, t in zip(messages, times, strict=True) if side_of(m) == "patient"]
    staff = [t for m, t in zip(messages, times, strict=True) if side_of(m) == "staff"]
    return replace(
        row,
        message_count=len(messages),
        last_message_at=max(times),
        last_patient_at=max(patient) if patient else None,
        last_staff_at=max(staff) if staff else None,
    )


class _LabellingGuard(Guard):
    """The caller's own guard, which also lets them set a security label: used for one create of
    a message this module labelled itself."""

    def may_label(self) -> bool:
        return True
