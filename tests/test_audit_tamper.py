"""Injected tampering of the audit store is detected, every time, and the record is named
(checklist U3; goal 8: 100% of >= 100 injected modifications, deletions, re-orderings, insertions).

The tamperer is a database superuser: the append-only guard is lifted inside one transaction,
the mutation is applied, the verifier runs on the same connection, and the transaction is rolled
back, so each mutation starts from the same intact log.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, delete, insert, select, update

from garrison.audit.chain import append_records, row_hash
from garrison.audit.records import AuditRecord
from garrison.audit.schema import GENESIS, append_only_suspended, audit_checkpoint, audit_log
from garrison.audit.signing import (
    Checkpoint,
    SigningKey,
    append_anchor,
    checkpoint,
    load_or_create_signing_key,
    load_public_key,
    public_key_file,
    read_anchors,
)
from garrison.audit.verify import (
    ALTERED,
    BAD_SIGNATURE,
    CHECKPOINT_NOT_ANCHORED,
    DELETED,
    INSERTED,
    REHASHED,
    REORDERED,
    REWRITTEN,
    TRUNCATED,
    UNKNOWN_KEY,
    VerifyReport,
    verify_audit,
)
from garrison.db.engine import read_transaction, snapshot_transaction, write_transaction

ROWS = 60
CHECKPOINTS = (30, 60)
MUTABLE_FIELDS = (
    "recorded",
    "action",
    "outcome",
    "actor",
    "role",
    "patient",
    "entities",
    "purpose_of_use",
    "source",
    "session",
    "detail",
    "prev_hash",
    "hash",
)


def _record(rng: random.Random, n: int) -> AuditRecord:
    patient = rng.choice([None, *map(str, range(8))])
    return AuditRecord(
        action=rng.choice(["patient:record:read", "patient:record:search", "user:session:login"]),
        outcome=rng.choice(["success", "denied", "failed"]),
        actor=f"Practitioner/{rng.randrange(9)}",
        role=rng.choice(["physician", "nurse", "him"]),
        recorded=datetime(2026, 10, 1, tzinfo=UTC) + timedelta(seconds=37 * n),
        patient=patient,
        entities=tuple(f"Observation/{rng.randrange(100)}" for _ in range(rng.randrange(3))),
        purpose_of_use=rng.choice([None, "TREAT", "ETREAT"]),
        source=rng.choice([None, "10.1.2.3", "client/va"]),
        session=rng.choice([None, f"s{n}"]),
        detail={"n": n, "q": "name=smith"} if n % 3 else {},
    )


@dataclass
class Chain:
    engine: Engine
    key: SigningKey
    anchors: list[Checkpoint]
    rows: dict[int, dict[str, object]]


@pytest.fixture
def chain(engine: Engine, tmp_path: Path) -> Chain:
    """60 records with signed checkpoints (and anchors) at seq 30 and seq 60."""
    rng = random.Random(7)
    key = load_or_create_signing_key(tmp_path / "audit-signing-key.pem")
    anchors = tmp_path / "audit-anchors.jsonl"
    for batch in range(6):
        with write_transaction(engine) as connection:
            append_records(connection, [_record(rng, batch * 10 + i) for i in range(10)])
            if batch * 10 + 10 in CHECKPOINTS:
                checkpoint(connection, key, anchor_path=anchors)
    with read_transaction(engine) as connection:
        rows = {int(r.seq): dict(r._mapping) for r in connection.execute(select(audit_log))}
    return Chain(engine, key, read_anchors(anchors), rows)


class _Rollback(Exception):
    pass


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    """A superuser's transaction with the append-only guard lifted; always rolled back."""
    try:
        with write_transaction(engine) as connection, append_only_suspended(connection):
            yield connection
            raise _Rollback
    except _Rollback:
        pass


def verify(connection: Connection, chain: Chain, anchors: list[Checkpoint] | None = None) -> VerifyReport:
    return verify_audit(connection, chain.key.public_key, chain.anchors if anchors is None else anchors)


@dataclass
class Expectation:
    named: set[tuple[str, int]]  # (kind, seq) the report must contain
    touched: set[int]  # every seq the report may name


def _other_hex(rng: random.Random, current: object) -> str:
    while True:
        value = f"{rng.getrandbits(256):064x}"
        if value != current:
            return value


def _changed(rng: random.Random, field: str, current: object) -> object:
    if field in ("prev_hash", "hash"):
        return _other_hex(rng, current)
    if field == "recorded":
        moment = datetime.fromisoformat(str(current)) + timedelta(
            seconds=rng.choice([-1, 1]) * rng.randrange(1, 9999)
        )
        return moment.isoformat(timespec="microseconds")
    if field == "outcome":
        return rng.choice([o for o in ("success", "denied", "failed") if o != current])
    if field == "entities":
        return '["Observation/999"]' if current != '["Observation/999"]' else "[]"
    if field == "detail":
        return '{"n":-1}'
    if field == "patient" and current is not None and rng.random() < 0.5:
        return None
    return f"{current or ''}x"


def change_field(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    seq = rng.randrange(1, ROWS + 1)
    field = rng.choice(MUTABLE_FIELDS)
    value = _changed(rng, field, chain.rows[seq][field])
    assert value != chain.rows[seq][field]
    c.execute(update(audit_log).where(audit_log.c.seq == seq).values({field: value}))
    return Expectation({(ALTERED, seq)}, {seq})


def delete_row(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    seq = rng.randrange(1, ROWS + 1)
    c.execute(delete(audit_log).where(audit_log.c.seq == seq))
    # The last row is only known to exist from the checkpoint that signed it.
    return Expectation({(TRUNCATED if seq == ROWS else DELETED, seq)}, {seq})


def swap_rows(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    a, b = sorted(rng.sample(range(1, ROWS + 1), 2))
    s = audit_log.c.seq
    c.execute(update(audit_log).where(s == a).values(seq=-a))
    c.execute(update(audit_log).where(s == b).values(seq=a))
    c.execute(update(audit_log).where(s == -a).values(seq=b))
    return Expectation({(REORDERED, a), (REORDERED, b)}, {a, b})


def insert_forged(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    """A record slipped in at seq k, with a correct hash linked to seq k - 1; the rest renumbered."""
    k = rng.randrange(1, ROWS + 1)
    s = audit_log.c.seq
    c.execute(update(audit_log).where(s >= k).values(seq=-(s + 1)))
    c.execute(update(audit_log).where(s < 0).values(seq=-s))
    forged = dict(chain.rows[rng.randrange(1, ROWS + 1)])
    forged.update(seq=k, actor="Practitioner/666", prev_hash=chain.rows[k - 1]["hash"] if k > 1 else GENESIS)
    forged["hash"] = row_hash(forged, str(forged["prev_hash"]))
    c.execute(insert(audit_log), [forged])
    return Expectation({(INSERTED, k)}, set(range(k, ROWS + 2)))


def truncate_tail(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    first = rng.randrange(1, ROWS + 1)
    c.execute(delete(audit_log).where(audit_log.c.seq >= first))
    if rng.random() < 0.5:  # cover the tracks in the database too; the anchor file remains
        c.execute(delete(audit_checkpoint).where(audit_checkpoint.c.upto_seq >= first))
    return Expectation({(TRUNCATED, first)}, set(range(first, ROWS + 1)))


def rehash_row(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    """Change a record and recompute its hash: its successor still holds the old one."""
    seq = rng.randrange(1, ROWS)
    row = dict(chain.rows[seq])
    row["actor"] = f"{row['actor']}x"
    row["hash"] = row_hash(row, str(row["prev_hash"]))
    c.execute(update(audit_log).where(audit_log.c.seq == seq).values(actor=row["actor"], hash=row["hash"]))
    return Expectation({(REHASHED, seq)}, {seq})


def delete_and_renumber(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    """Delete a record and close the gap by renumbering the ones after it."""
    seq = rng.randrange(1, ROWS)
    s = audit_log.c.seq
    c.execute(delete(audit_log).where(s == seq))
    c.execute(update(audit_log).where(s > seq).values(seq=-(s - 1)))
    c.execute(update(audit_log).where(s < 0).values(seq=-s))
    return Expectation({(DELETED, seq), (REORDERED, seq)}, set(range(seq, ROWS + 1)))


def move_far(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    seq = rng.randrange(1, ROWS + 1)
    c.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=1000 + seq))
    return Expectation({(REORDERED, 1000 + seq)}, {seq, 1000 + seq})


def forge_across_a_gap(c: Connection, rng: random.Random, chain: Chain) -> Expectation:
    """A record appended after the last checkpoint with a seq that skips some, linked to the tail."""
    seq = ROWS + rng.randrange(2, 7)
    forged = dict(chain.rows[rng.randrange(1, ROWS + 1)])
    forged.update(seq=seq, actor="Practitioner/666", prev_hash=chain.rows[ROWS]["hash"])
    forged["hash"] = row_hash(forged, str(forged["prev_hash"]))
    c.execute(insert(audit_log), [forged])
    return Expectation({(INSERTED, seq)}, {seq})


MUTATIONS: list[Callable[[Connection, random.Random, Chain], Expectation]] = [
    delete_and_renumber,
    move_far,
    forge_across_a_gap,
    change_field,
    delete_row,
    swap_rows,
    insert_forged,
    truncate_tail,
    rehash_row,
]


def test_intact_log_verifies(chain: Chain, tmp_path: Path) -> None:
    public = load_public_key(public_key_file(tmp_path / "audit-signing-key.pem"))
    with snapshot_transaction(chain.engine) as connection:
        report = verify_audit(connection, public, chain.anchors)
    assert report.ok, report.problems
    assert (report.records, report.last_seq, report.checkpoints, report.anchors) == (ROWS, ROWS, 2, 2)
    assert report.warnings == ()


def test_random_tampering_is_always_detected_and_named(chain: Chain) -> None:
    # checklist U3, goal 8: >= 100 random mutations, each detected with the exact row named.
    rng = random.Random(20261126)
    kinds = [m for _ in range(15) for m in MUTATIONS]
    rng.shuffle(kinds)
    for number, mutate in enumerate(kinds):
        with tampering(chain.engine) as connection:
            expected = mutate(connection, rng, chain)
            report = verify(connection, chain)
        label = f"mutation {number} ({mutate.__name__}): expected {expected.named}, got {report.problems}"
        assert not report.ok, label
        assert expected.named <= report.named(), label
        named_seqs = {s for p in report.problems for s in p.seqs()}
        assert named_seqs <= expected.touched, label
    assert len(kinds) >= 100
    with snapshot_transaction(chain.engine) as connection:
        assert verify(connection, chain).ok  # every mutation was rolled back


@pytest.mark.parametrize("start", [1, 17, 30, 31, 45, 60])
def test_a_rewritten_log_is_caught_by_the_checkpoints(chain: Chain, start: int) -> None:
    # The whole log re-hashed from `start` on is self-consistent: only the signed checkpoints
    # (and anchors) can tell, and they bound the rewrite to the records between two checkpoints.
    with tampering(chain.engine) as connection:
        prev = str(chain.rows[start - 1]["hash"]) if start > 1 else GENESIS
        for seq in range(start, ROWS + 1):
            row = dict(chain.rows[seq])
            if seq == start:
                row["outcome"] = "success" if row["outcome"] != "success" else "denied"
            row["prev_hash"], row["hash"] = prev, row_hash(row, prev)
            prev = str(row["hash"])
            values = {k: row[k] for k in ("outcome", "prev_hash", "hash")}
            connection.execute(update(audit_log).where(audit_log.c.seq == seq).values(values))
        report = verify(connection, chain)
    # Each checkpoint after the rewrite's start disagrees with the chain; the first names the
    # checkpoint interval holding `start`.
    assert {p.kind for p in report.problems} == {REWRITTEN}
    first = report.problems[0]
    assert start in first.seqs()
    assert first.seqs() == (range(1, 31) if start <= 30 else range(31, 61))
    assert [p.seqs() for p in report.problems[1:]] == ([range(31, 61)] if start <= 30 else [])


def test_forged_or_edited_checkpoints_fail_their_signature(chain: Chain) -> None:
    with tampering(chain.engine) as connection:
        connection.execute(
            update(audit_checkpoint).where(audit_checkpoint.c.upto_seq == 30).values(signed_at="2020-01-01")
        )
        report = verify(connection, chain, anchors=[a for a in chain.anchors if a.upto_seq != 30])
    assert (BAD_SIGNATURE, 30) in report.named()
    edited = [
        Checkpoint(a.upto_seq, "0" * 64, a.signed_at, a.key_id, a.signature) if a.upto_seq == 60 else a
        for a in chain.anchors
    ]
    with snapshot_transaction(chain.engine) as connection:
        report = verify(connection, chain, anchors=edited)
    assert (BAD_SIGNATURE, 60) in report.named()


def test_checkpoints_need_the_right_key(chain: Chain) -> None:
    stranger = SigningKey.generate()
    with snapshot_transaction(chain.engine) as connection:
        report = verify_audit(connection, stranger.public_key, chain.anchors)
    assert report.named() == {(UNKNOWN_KEY, 30), (UNKNOWN_KEY, 60)}


def test_the_anchor_file_and_the_database_must_agree(chain: Chain, tmp_path: Path) -> None:
    with snapshot_transaction(chain.engine) as connection:
        report = verify(connection, chain, anchors=chain.anchors[1:])
        assert report.named() == {(CHECKPOINT_NOT_ANCHORED, 30)}
        # A checkpoint newer than every anchor may have been made after the file was read.
        report = verify(connection, chain, anchors=chain.anchors[:1])
        assert report.ok and report.warnings == ("the checkpoint at seq 60 is newer than the last anchor",)
    # A checkpoint row deleted from the database is harmless while its anchor still matches.
    with tampering(chain.engine) as connection:
        connection.execute(delete(audit_checkpoint))
        report = verify(connection, chain)
    assert report.ok
    assert len(report.warnings) == 2
    # Without any anchor file, the verifier says what it could not check.
    with snapshot_transaction(chain.engine) as connection:
        report = verify_audit(connection, chain.key.public_key, None)
    assert report.ok and report.anchors is None and report.warnings


def test_checkpoint_of_an_unchanged_tail_is_reused(chain: Chain, tmp_path: Path) -> None:
    anchors = tmp_path / "again.jsonl"
    with write_transaction(chain.engine) as connection:
        again = checkpoint(connection, chain.key, anchor_path=anchors)
    assert again == chain.anchors[-1]
    assert read_anchors(anchors) == [again]
    append_anchor(anchors, again)
    assert len(read_anchors(anchors)) == 2


def test_signing_key_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    first = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signing_key(path).key_id == first.key_id
    assert public_key_file(path).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE" not in public_key_file(path).read_bytes()
    path.chmod(0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_signing_key(path)
