"""Small JOSE helpers around joserfc: read a compact JWS's header and claims before choosing
the key (never trusting them before the signature is verified), and sign our own tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from joserfc import jws

from garrison.oauth.keys import SigningKey

MAX_TOKEN_LENGTH = 16 * 1024  # far above any token we issue; refuse to parse anything larger


def _b64url(segment: str) -> bytes:
    if not segment or any(c not in _B64URL for c in segment):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64url") from error


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def decode_segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (unverified) protected header and claims of a compact JWS. Raises ValueError when it
    is not three base64url segments with JSON objects in the first two."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a compact JWS has three segments")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError("segments are not JSON") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("header and claims must be JSON objects")
    return header, claims


def numeric_date(value: Any) -> datetime:
    """A JWT NumericDate (RFC 7519 §2) as a UTC datetime; ValueError if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a NumericDate")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise ValueError("NumericDate out of range") from error


def sign(key: SigningKey, claims: Mapping[str, Any], typ: str) -> str:
    """A compact JWS of `claims`, signed with our key; the header names the key by kid only."""
    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    payload = json.dumps(dict(claims), separators=(",", ":"), sort_keys=True)
    return jws.serialize_compact(header, payload, key.key, algorithms=[key.alg])
