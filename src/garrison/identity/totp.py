"""Time-based one-time passwords (RFC 6238) with single use per time step.

A code is accepted for the current 30-second step and one step either side (clock drift between
phone and server), and only for a step later than the last one accepted for the account, so a
code cannot be replayed, nor an older code used after a newer one (checklist A5; ASVS 6.5.1,
6.5.5). A code from 60 seconds ago is two steps old and is refused.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

import pyotp

ISSUER = "Garrison"
DIGITS = 6
INTERVAL = 30
WINDOW = 1  # steps either side of the current one


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """What the person enrols in an authenticator app; shown once, never logged."""

    secret: str  # base32
    uri: str  # otpauth://totp/... (RFC 6238 key URI, as authenticator apps read it)


def new_enrolment(username: str) -> TotpEnrolment:
    secret = pyotp.random_base32()  # 160 bits, the HMAC-SHA1 key size RFC 4226 recommends
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=username, issuer_name=ISSUER
    )
    return TotpEnrolment(secret=secret, uri=uri)


def matching_step(secret: str, code: str, at: datetime, *, after_step: int | None) -> int | None:
    """The time step `code` belongs to, if it is valid at `at` and later than `after_step`."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    current = totp.timecode(at)
    found: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Compare every candidate (no early exit) so timing does not reveal which step matched.
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    if found is None or (after_step is not None and found <= after_step):
        return None
    return found


def code_at(secret: str, at: datetime) -> str:
    """The code an authenticator shows at `at` (for enrolment checks and tests)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).at(at)
