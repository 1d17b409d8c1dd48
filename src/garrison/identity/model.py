"""The values identity code passes around: accounts and sessions as the rest of Garrison sees them.

Neither carries a secret (password hash, TOTP secret, session token), so they can be logged,
rendered or put in an exception without leaking one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from garrison.identity.tables import parse_optional, parse_stamp

Kind = Literal["staff", "patient", "proxy"]
KINDS: tuple[Kind, ...] = ("staff", "patient", "proxy")

# The roles of the access policy (garrison.fhir.authz); `system` belongs to backend clients only.
STAFF_ROLES = (
    "physician",
    "nurse",
    "pharmacist",
    "front_desk",
    "him",
    "privacy_officer",
    "analyst",
    "administrator",
)
ROLES = (*STAFF_ROLES, "patient", "proxy")
# Which FHIR resource an account of each kind stands for (SMART `fhirUser`).
FHIR_USER_TYPE: dict[Kind, str] = {"staff": "Practitioner", "patient": "Patient", "proxy": "RelatedPerson"}


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    username: str
    kind: Kind
    role: str
    display_name: str
    fhir_user: str
    facility: str | None
    edipi: str | None
    mfa_required: bool
    totp_enrolled: bool
    has_password: bool
    disabled: bool
    created: datetime
    locked_until: datetime | None
    last_sign_in_at: datetime | None
    last_sign_in_from: str | None
    previous_sign_in_at: datetime | None
    previous_sign_in_from: str | None

    @property
    def needs_second_factor(self) -> bool:
        """Staff always (checklist A5); patients and proxies once they enrol."""
        return self.mfa_required or self.totp_enrolled

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"


def account_from_row(row: Any) -> Account:
    """An Account from a row of the `account` table (or a join that includes its columns)."""
    m = row._mapping
    return Account(
        id=m["id"],
        username=m["username"],
        kind=m["kind"],
        role=m["role"],
        display_name=m["display_name"],
        fhir_user=m["fhir_user"],
        facility=m["facility"],
        edipi=m["edipi"],
        mfa_required=bool(m["mfa_required"]),
        totp_enrolled=m["totp_secret"] is not None,
        has_password=m["password_hash"] is not None,
        disabled=bool(m["disabled"]),
        created=parse_stamp(m["created"]),
        locked_until=parse_optional(m["locked_until"]),
        last_sign_in_at=parse_optional(m["last_sign_in_at"]),
        last_sign_in_from=m["last_sign_in_from"],
        previous_sign_in_at=parse_optional(m["previous_sign_in_at"]),
        previous_sign_in_from=m["previous_sign_in_from"],
    )


@dataclass(frozen=True, slots=True)
class Session:
    """A live sign-in session. `id` is public (audit, listeners, "end this session" buttons);
    the token that proves it is known only to the browser."""

    id: str
    account: Account
    method: str  # password | password+totp | smartcard
    mfa: bool
    created: datetime
    last_seen: datetime
    expires: datetime  # absolute end of life
    idle_seconds: int
    source: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just started: `token` goes into the cookie and is never stored or logged."""

    token: str
    session: Session
