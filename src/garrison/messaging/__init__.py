"""Secure messaging between patients (or their proxies) and care teams.

- Each message is a FHIR Communication (https://hl7.org/fhir/R4/communication.html): subject the
  patient; sender the Patient, the proxy's RelatedPerson or the staff member's PractitionerRole;
  recipient the chosen CareTeam, HealthcareService or Organization (or, for replies, the
  patient); `topic.text` the subject line; `payload` the text and any attachments (each stored
  as a Binary, referenced by `contentAttachment.url`); `partOf` the thread's first message and
  `inResponseTo` the message answered; `category` Garrison's secure-message code.
- The thread's state (staff pool, assignee, open or closed, read markers) is a row of
  `message_thread` (see `tables` for why not a Task).
- `routing` decides which pool a new thread goes to. A message that cannot reach the chosen team
  goes to a named queue (the facility's triage pool, or the enterprise-wide "Unrouted patient
  messages" queue), never nowhere.
- `threads` is the patient's side (write, reply, follow up a closed conversation), `inbox` the
  staff side (assign, reply, move to another team or clinic, close, reopen); both work through a
  Repository bound to the caller's AccessContext, so the access policy decides what each caller
  sees.
- `history` keeps what staff did to a thread (moves, closes, reopens) as notes on its first
  Communication; `confidential` labels what a 13-to-17-year-old writes (and the answers) so a
  parent's proxy access sees neither the messages nor their counts.
"""
