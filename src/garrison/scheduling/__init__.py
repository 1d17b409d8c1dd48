"""Appointments (the TRICARE Online part of the portal): clinic time as FHIR Schedules and Slots,
finding open slots, booking, cancelling and moving visits, the waitlist, and reminders.

- `rules`: visit types and lengths, booking windows, service groups (data, no database).
- `generate`: Schedules and free Slots for the next weeks at chosen facilities.
- `directory`: a facility's bookable clinics, their Schedules and places.
- `eligibility`: the rules that need the patient's record (care team, referrals, age).
- `slots`: finding open slots, grouped by the facility's local day.
- `booking`: book, cancel, reschedule, take a waitlist offer; `slot_store` changes Slot status.
- `waitlist`: waiting for an earlier time, offers held for the first patient waiting.
- `reminders`: confirmations, reminders and offers through the notifications outbox.
- `visits`: the patient's upcoming and past visits; `pages`: what the portal pages show.
- `demo`: `seed_demo` (the demo family's clinics) and `seed_patients` (benchmarks).

Everything runs in the caller's transaction through a Repository bound to the caller's access
context; nothing here commits.
"""
