"""Cross-site request forgery tokens (OWASP CSRF Prevention Cheat Sheet).

- Signed in: a synchronizer token bound to the session, HMAC(session token, label). It needs no
  storage, changes with every new session and cannot be computed without the session cookie.
- Before sign-in (the sign-in forms themselves): a signed double-submit token. A random nonce
  lives in an HttpOnly cookie; the form carries HMAC(server key, nonce). A forged form would need
  both the victim's cookie and the server key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_SESSION_LABEL = b"garrison-csrf-session-v1"
_PRESESSION_LABEL = b"garrison-csrf-presession-v1:"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def session_token(session_secret: str) -> str:
    return _b64(hmac.new(session_secret.encode("utf-8"), _SESSION_LABEL, hashlib.sha256).digest())


def presession_token(key: bytes, nonce: str) -> str:
    return _b64(hmac.new(key, _PRESESSION_LABEL + nonce.encode("ascii"), hashlib.sha256).digest())


def valid_nonce(nonce: str | None) -> bool:
    return nonce is not None and bool(_NONCE.match(nonce))


def tokens_match(expected: str | None, submitted: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), submitted.encode("utf-8"))
