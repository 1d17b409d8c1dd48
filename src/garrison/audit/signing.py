"""Signed checkpoints of the audit chain, and the anchor file kept outside the database.

A checkpoint is an Ed25519 signature over (upto_seq, chain_hash, signed_at, key_id): the state of
the whole log up to `upto_seq` is fixed by the hash of that row. The checkpoint row is stored in
`audit_checkpoint`, and the same checkpoint is appended as one JSON line to the anchor file. The
anchor lets `verify` notice what the chain alone cannot: rows deleted from the end of the log, and
a log rewritten from some point on with fresh, self-consistent hashes (checklist U3; the checklist's
"per-row SHA-256 hash chain + periodic anchor stored outside DB").

Keys: the private key is a PKCS#8 PEM file created with mode 0600 on first use; the public key is
written beside it (`<name>.pub.pem`) so a verifier can be given only the public half.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, insert, select

from garrison import clock
from garrison.audit.chain import chain_tail, format_recorded
from garrison.audit.schema import audit_checkpoint
from garrison.settings import Settings

# Domain separation: a signature over a checkpoint can never be mistaken for one over anything else.
_SIGNED_CONTEXT = "garrison-audit-checkpoint-v1"


class AnchorFileError(ValueError):
    """The anchor file has a line that is not a checkpoint."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    upto_seq: int
    chain_hash: str  # the `hash` of row `upto_seq` (GENESIS for an empty log)
    signed_at: str  # fixed-width ISO-8601 UTC
    key_id: str
    signature: str  # Ed25519 over `message()`, base64url without padding

    def message(self) -> bytes:
        """The exact bytes signed."""
        return orjson.dumps(
            {
                "context": _SIGNED_CONTEXT,
                "upto_seq": self.upto_seq,
                "chain_hash": self.chain_hash,
                "signed_at": self.signed_at,
                "key_id": self.key_id,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        try:
            upto, chain_hash = data["upto_seq"], data["chain_hash"]
            signed_at, key_id, signature = data["signed_at"], data["key_id"], data["signature"]
        except KeyError as missing:
            raise ValueError(f"a checkpoint needs {missing}") from None
        if type(upto) is not int or not all(
            isinstance(v, str) for v in (chain_hash, signed_at, key_id, signature)
        ):
            raise ValueError("checkpoint fields have the wrong types")
        return cls(upto, chain_hash, signed_at, key_id, signature)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The audit checkpoint signing key (private half)."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, message: bytes) -> str:
        return _b64(self.private_key.sign(message))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_key_file(settings: Settings) -> Path:
    return settings.audit_signing_key_file or settings.data_dir / "audit-signing-key.pem"


def public_key_file(private_key_file: Path) -> Path:
    return private_key_file.with_name(private_key_file.stem + ".pub.pem")


def anchor_file(settings: Settings) -> Path:
    return settings.audit_anchor_file or settings.data_dir / "audit-anchors.jsonl"


def _create_exclusively(path: Path, data: bytes, mode: int) -> bool:
    """Write `path` atomically unless it exists; False if another process made it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(temporary, path)  # fails if the file exists: no half-written key is ever seen
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key in `path`, creating it (mode 0600) and its public half when it does not exist."""
    if not path.exists():
        key = SigningKey.generate()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _create_exclusively(path, pem, 0o600)
    if path.stat().st_mode & 0o077:
        # Like ssh: a signing key others can read is not a secret any more.
        raise PermissionError(f"{path} is accessible to other users; chmod 600 it")
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    key = SigningKey(loaded)
    public_path = public_key_file(path)
    if not public_path.exists():
        public_pem = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _create_exclusively(public_path, public_pem, 0o644)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file holding either the public or the private key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 key")
    return public


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(_unb64(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------- anchors


def append_anchor(path: Path, checkpoint: Checkpoint) -> None:
    """Append one checkpoint line to the anchor file and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(checkpoint.to_json(), option=orjson.OPT_SORT_KEYS) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the anchor file, in file order. Raises AnchorFileError on a bad line."""
    anchors: list[Checkpoint] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            anchors.append(Checkpoint.from_json(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValueError) as error:
            raise AnchorFileError(f"{path}:{number}: not a checkpoint ({error})") from None
    return anchors


# ------------------------------------------------------------------------------ checkpoints


def stored_checkpoints(connection: Connection) -> list[Checkpoint]:
    c = audit_checkpoint.c
    rows = connection.execute(
        select(c.upto_seq, c.chain_hash, c.signed_at, c.key_id, c.signature).order_by(c.upto_seq)
    )
    return [Checkpoint(int(r.upto_seq), r.chain_hash, r.signed_at, r.key_id, r.signature) for r in rows]


def checkpoint(connection: Connection, key: SigningKey, *, anchor_path: Path | None = None) -> Checkpoint:
    """Sign the chain's current tail, store the checkpoint and append it to the anchor file.

    Run it in a transaction of its own and commit at once (as `garrison audit checkpoint` does).
    The anchor line is written before that commit: should the commit fail, the anchor names a
    checkpoint the database lacks, which `verify` reports as a warning while the chain matches it.
    A checkpoint of an unchanged tail is returned as it was (re-anchored if the file lacks it).
    """
    upto_seq, chain_hash = chain_tail(connection)
    c = audit_checkpoint.c
    existing = connection.execute(
        select(c.upto_seq, c.chain_hash, c.signed_at, c.key_id, c.signature).where(c.upto_seq == upto_seq)
    ).first()
    if existing is not None:
        found = Checkpoint(
            int(existing.upto_seq),
            existing.chain_hash,
            existing.signed_at,
            existing.key_id,
            existing.signature,
        )
        if anchor_path is not None and (not anchor_path.exists() or found not in read_anchors(anchor_path)):
            append_anchor(anchor_path, found)
        return found
    unsigned = Checkpoint(upto_seq, chain_hash, format_recorded(clock.now()), key.key_id, "")
    signed = Checkpoint(upto_seq, chain_hash, unsigned.signed_at, key.key_id, key.sign(unsigned.message()))
    connection.execute(insert(audit_checkpoint), [signed.to_json()])
    if anchor_path is not None:
        append_anchor(anchor_path, signed)
    return signed


def public_keys_by_id(keys: Ed25519PublicKey | Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    if isinstance(keys, Ed25519PublicKey):
        keys = [keys]
    return {key_id_of(k): k for k in keys}
