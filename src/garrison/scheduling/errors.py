"""Scheduling's refusals, as domain errors the portal shows as they are worded."""

from __future__ import annotations

from garrison.errors import BadRequest, Conflict

TAKEN = "That time was just taken; here are other times."


class SlotTaken(Conflict):
    """Someone else booked (or is being offered) the slot first: a 409 with a plain message."""

    def __init__(self, slot_id: str, message: str = TAKEN) -> None:
        super().__init__(message)
        self.slot_id = slot_id


class BookingRefused(BadRequest):
    """A booking rule says no (window, care team, referral, overlap, cut-off); the message says
    why in the patient's words."""
