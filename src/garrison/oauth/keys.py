"""Signing keys for access and ID tokens: generated at first use, rotated on demand.

The private half of each key is a PKCS#8 PEM file (mode 0600) under `settings.data_dir/oauth-keys`,
never in the repository or the database; the `oauth_signing_key` table records each key's id,
algorithm, public JWK and state. Tokens are signed with the newest active key. A retired key stays
published in the JWKS, and tokens signed with it stay valid, for `settings.oauth_key_grace`
seconds after it was retired; after that it is refused (checklist Z8, key rotation).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import Connection, select, update

from garrison import clock
from garrison.oauth.model import as_utc
from garrison.oauth.tables import oauth_signing_key
from garrison.settings import Settings

AsymmetricKey = RSAKey | ECKey
SIGNING_ALGS = ("RS256", "ES384")  # the only algorithms our tokens are ever signed with

_cache_lock = threading.Lock()
_private_cache: dict[Path, AsymmetricKey] = {}
_public_cache: dict[str, AsymmetricKey] = {}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: AsymmetricKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    alg: str
    key: AsymmetricKey
    state: str
    retired: datetime | None

    def usable(self, settings: Settings, now: datetime) -> bool:
        return key_usable(self.state, self.retired, settings, now)


def key_usable(state: str, retired: datetime | None, settings: Settings, now: datetime) -> bool:
    """Active keys always; retired keys only during the grace period."""
    if state == "active":
        return True
    if retired is None:
        return False
    return now <= retired + timedelta(seconds=settings.oauth_key_grace)


def key_dir(settings: Settings) -> Path:
    return settings.data_dir / "oauth-keys"


def _key_path(settings: Settings, kid: str) -> Path:
    return key_dir(settings) / f"{kid}.pem"


def _generate(alg: str, kid: str) -> AsymmetricKey:
    parameters: Any = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters, private=True)
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters=parameters, private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def _write_private(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: a key file is written once and never replaced; 0600: readable by the server only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def create_signing_key(conn: Connection, settings: Settings, alg: str | None = None) -> str:
    """Generate a new active key (its PEM file and its row); returns its kid. Existing keys are
    left as they are: use `rotate_signing_key` to retire them."""
    alg = alg or settings.oauth_signing_alg
    kid = secrets.token_hex(12)  # hex: safe as a file name
    key = _generate(alg, kid)
    path = _key_path(settings, kid)
    _write_private(path, key.as_pem(private=True))
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    conn.execute(
        oauth_signing_key.insert().values(
            kid=kid,
            alg=alg,
            state="active",
            public_jwk=json.dumps(public, sort_keys=True),
            created=clock.now(),
            retired=None,
        )
    )
    with _cache_lock:
        _private_cache[path] = key
    return kid


def rotate_signing_key(conn: Connection, settings: Settings, alg: str | None = None) -> str:
    """Make a new active signing key and retire every other active one; returns the new kid.
    Tokens already signed with a retired key stay valid during the grace period only."""
    kid = create_signing_key(conn, settings, alg)
    conn.execute(
        update(oauth_signing_key)
        .where(oauth_signing_key.c.state == "active", oauth_signing_key.c.kid != kid)
        .values(state="retired", retired=clock.now())
    )
    forget_verification_keys()
    return kid


def _load_private(path: Path, alg: str) -> AsymmetricKey | None:
    with _cache_lock:
        cached = _private_cache.get(path)
    if cached is not None:
        return cached
    if not path.is_file():
        return None
    pem = path.read_bytes()
    key: AsymmetricKey = RSAKey.import_key(pem) if alg == "RS256" else ECKey.import_key(pem)
    with _cache_lock:
        _private_cache[path] = key
    return key


def signing_key(conn: Connection, settings: Settings) -> SigningKey:
    """The key new tokens are signed with: the newest active key whose private file this server
    has; one is generated if there is none (first use, or a new data directory)."""
    rows = conn.execute(
        select(oauth_signing_key.c.kid, oauth_signing_key.c.alg)
        .where(oauth_signing_key.c.state == "active")
        .order_by(oauth_signing_key.c.created.desc(), oauth_signing_key.c.kid)
    ).all()
    for kid, alg in rows:
        key = _load_private(_key_path(settings, kid), alg)
        if key is not None:
            return SigningKey(kid=kid, alg=alg, key=key)
    kid = rotate_signing_key(conn, settings) if rows else create_signing_key(conn, settings)
    row = conn.execute(select(oauth_signing_key.c.alg).where(oauth_signing_key.c.kid == kid)).one()
    key = _load_private(_key_path(settings, kid), row.alg)
    assert key is not None  # just written
    return SigningKey(kid=kid, alg=row.alg, key=key)


def _public_key(kid: str, alg: str, public_jwk: str) -> AsymmetricKey:
    with _cache_lock:
        cached = _public_cache.get(kid)
    if cached is not None:
        return cached
    data = json.loads(public_jwk)
    key: AsymmetricKey = RSAKey.import_key(data) if alg == "RS256" else ECKey.import_key(data)
    with _cache_lock:
        _public_cache[kid] = key
    return key


# Key rows, kept a few seconds: every request checks its token's key, and keys change only at
# rotation (which clears this process's copy at once; other processes follow within the TTL).
_KEY_ROW_TTL = 5.0
_key_rows: dict[str, tuple[float, VerificationKey]] = {}


def forget_verification_keys() -> None:
    with _cache_lock:
        _key_rows.clear()


def verification_key(conn: Connection, kid: str) -> VerificationKey | None:
    """The public key recorded under `kid` (whatever its state), or None if unknown."""
    with _cache_lock:
        cached = _key_rows.get(kid)
    if cached is not None and time.monotonic() - cached[0] < _KEY_ROW_TTL:
        return cached[1]
    row = conn.execute(select(oauth_signing_key).where(oauth_signing_key.c.kid == kid)).first()
    if row is None:
        return None
    key = VerificationKey(
        kid=row.kid,
        alg=row.alg,
        key=_public_key(row.kid, row.alg, row.public_jwk),
        state=row.state,
        retired=as_utc(row.retired) if row.retired is not None else None,
    )
    with _cache_lock:
        _key_rows[kid] = (time.monotonic(), key)
    return key


def published_jwks(conn: Connection, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The JSON Web Key Set served at /oauth/jwks: active keys and retired keys still in grace."""
    now = clock.now()
    keys: list[dict[str, Any]] = []
    rows = conn.execute(select(oauth_signing_key).order_by(oauth_signing_key.c.created.desc())).all()
    for row in rows:
        retired = as_utc(row.retired) if row.retired is not None else None
        if key_usable(row.state, retired, settings, now):
            keys.append(json.loads(row.public_jwk))
    return {"keys": keys}
