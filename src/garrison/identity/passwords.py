"""Password hashing (argon2id) and the password policy.

Passwords are stored only as argon2id PHC strings with a per-password salt (checklist A3;
170.315(d)(12); RFC 9106). argon2-cffi's defaults are RFC 9106's second recommended option
(t=3, m=64 MiB, p=4); a hash made with other parameters is replaced at the next successful
sign-in (`needs_rehash`), so raising the cost reaches every account over time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12  # ASVS 6.2.1 / NIST SP 800-63B §3.1.1.2 (we ask for more than the 8 minimum)
MAX_LENGTH = 1024  # bounds the work an anonymous request can cause


class PasswordRejected(ValueError):
    """The password does not meet the policy; the message says why, for the person choosing it."""


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher(type=Type.ID)


def check_policy(password: str, *, username: str) -> None:
    """Raise PasswordRejected unless the password may be used by this username."""
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"A password needs at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"A password may have at most {MAX_LENGTH} characters.")
    if not password.strip():
        raise PasswordRejected("A password cannot be only spaces.")
    if password.strip().casefold() == username.strip().casefold():
        raise PasswordRejected("A password cannot be the username.")


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> PasswordCheck:
    """Check a password; an account without a password (smart card only) never matches.

    When there is nothing to compare with, a dummy hash is still verified so that the time taken
    does not tell an unknown username from a wrong password.
    """
    if stored_hash is None or len(password) > MAX_LENGTH:
        spend_equal_time()
        return PasswordCheck(ok=False)
    try:
        hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, needs_rehash=hasher().check_needs_rehash(stored_hash))


@cache
def _dummy_hash() -> str:
    return hasher().hash("garrison-dummy-password-for-timing")


def spend_equal_time() -> None:
    """Verify against a dummy hash: the cost of a real check, with no result."""
    with contextlib.suppress(VerificationError):
        hasher().verify(_dummy_hash(), "not-the-dummy-password")


def is_argon2id(stored_hash: str) -> bool:
    return stored_hash.startswith("$argon2id$v=19$")
