"""Verify the audit chain and name every record that was altered, deleted, re-ordered or inserted.

A first pass streams the log in seq order and checks each row against its own hash and its
predecessor's. An intact log stops there (constant memory). When something is wrong, a second pass
keeps (seq, prev_hash, hash) of every row and works out what happened to which record:

- altered: the stored fields no longer give the stored hash (a field, `prev_hash` or `hash` changed);
- re-ordered: the row's hash is right for the same record at a different seq (seqs swapped or
  renumbered); the original seq is found by following `prev_hash` back to the genesis;
- deleted: no row holds some seq (and no re-ordered row came from it);
- re-hashed: the row is self-consistent, but its successor recorded a different hash for it (the
  record was changed and its hash recomputed); re-linked: its `prev_hash` was rewritten as well;
- inserted: a self-consistent row that nothing follows, sharing its predecessor with the genuine
  record that was pushed aside;
- truncated: a signed checkpoint or anchor covers seqs the log no longer holds;
- rewritten: the chain is self-consistent but differs from a signed checkpoint (the log was rebuilt
  with fresh hashes from some record on; only the range between checkpoints can be named).

Checkpoints are checked against their Ed25519 signatures and against the anchor file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select

from garrison.audit.chain import row_hash
from garrison.audit.schema import GENESIS, audit_log
from garrison.audit.signing import Checkpoint, public_keys_by_id, signature_valid, stored_checkpoints

ALTERED = "altered"
REORDERED = "reordered"
DELETED = "deleted"
REHASHED = "rehashed"
RELINKED = "relinked"
INSERTED = "inserted"
TRUNCATED = "truncated"
REWRITTEN = "rewritten"
BAD_SIGNATURE = "bad-signature"
UNKNOWN_KEY = "unknown-key"
CHECKPOINT_MISMATCH = "checkpoint-mismatch"
CHECKPOINT_NOT_ANCHORED = "checkpoint-not-anchored"
_RENUMBER_WINDOW = 8  # how far from its place a renumbered record is looked for


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    seq: int | None  # the record named (the first of a range)
    message: str
    seq_last: int | None = None  # the last seq of a range, when the problem covers several
    shift: int | None = None  # re-ordered records: stored seq minus the seq they were written with

    def seqs(self) -> range:
        if self.seq is None:
            return range(0)
        return range(self.seq, (self.seq_last if self.seq_last is not None else self.seq) + 1)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    last_seq: int
    checkpoints: int
    anchors: int | None  # None when no anchor file was given
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def named(self) -> set[tuple[str, int]]:
        """(kind, seq) for the first seq of every problem that names a record."""
        return {(p.kind, p.seq) for p in self.problems if p.seq is not None}


@dataclass(slots=True)
class _Light:
    seq: int
    prev: str
    hash: str
    ok: bool


@dataclass(slots=True)
class _Scan:
    records: int = 0
    last_seq: int = 0
    highest_original: int = 0  # the highest seq any row was written with (found when diagnosing)
    anomalous: bool = False
    hashes_at: dict[int, str] = field(default_factory=dict)  # hash at each checkpointed seq
    rows: list[_Light] = field(default_factory=list)  # kept only in the diagnosing pass
    broken: dict[int, dict[str, Any]] = field(default_factory=dict)  # full rows failing their own hash


def _stream(connection: Connection) -> Iterator[Any]:
    # Options on the statement: Connection.execution_options would change the caller's connection.
    query = select(audit_log).order_by(audit_log.c.seq).execution_options(stream_results=True, yield_per=2000)
    result = connection.execute(query)
    yield from result


def _scan(connection: Connection, watched: set[int], *, keep: bool) -> _Scan:
    scan = _Scan()
    expected_prev, expected_seq = GENESIS, 1
    for row in _stream(connection):
        mapping = row._mapping
        seq, prev, stored = int(mapping["seq"]), mapping["prev_hash"], mapping["hash"]
        ok = row_hash(mapping, prev) == stored
        if not ok or seq != expected_seq or prev != expected_prev:
            scan.anomalous = True
        if seq in watched:
            scan.hashes_at[seq] = stored
        if keep:
            scan.rows.append(_Light(seq, prev, stored, ok))
            if not ok:
                scan.broken[seq] = dict(mapping)
        scan.records += 1
        scan.last_seq = seq
        expected_prev, expected_seq = stored, seq + 1
    return scan


def _original_seqs(
    rows: Sequence[_Light], by_hash: Mapping[str, int], resolve: Callable[[int], int | None]
) -> list[int | None]:
    """Each row's seq in the chain as written, found by following prev_hash back to the genesis
    Where the trail breaks off (its predecessor deleted or altered), `resolve` says where that row
    was written, if it can; None marks a row whose origin is unknown (or a forged cycle)."""
    found: list[int | None] = [None] * len(rows)
    done = [False] * len(rows)
    for start in range(len(rows)):
        path: list[int] = []
        on_path: set[int] = set()
        i = start
        base: int | None
        while True:
            if done[i]:
                base = found[i]
                break
            if i in on_path:
                base = None
                break
            path.append(i)
            on_path.add(i)
            prev = rows[i].prev
            if prev == GENESIS:
                base = 0
                break
            j = by_hash.get(prev)
            if j is None:
                origin = resolve(i)
                base = None if origin is None else origin - 1
                break
            i = j
        for index in reversed(path):
            base = None if base is None else base + 1
            found[index], done[index] = base, True
    return found


def _ranges(seqs: Sequence[int]) -> Iterator[tuple[int, int]]:
    if not seqs:
        return
    start = last = seqs[0]
    for s in seqs[1:]:
        if s != last + 1:
            yield start, last
            start = s
        last = s
    yield start, last


def _diagnose(scan: _Scan) -> list[Problem]:
    rows = scan.rows
    by_hash: dict[str, int] = {}
    for index, light in enumerate(rows):
        by_hash.setdefault(light.hash, index)

    def resolve(index: int) -> int | None:
        light = rows[index]
        if light.ok:
            return light.seq
        # Renumbered after a deletion or insertion nearby: try the seqs close to where it is.
        full = scan.broken[light.seq]
        for distance in range(1, _RENUMBER_WINDOW + 1):
            for seq in (light.seq - distance, light.seq + distance):
                if seq >= 1 and row_hash(full, light.prev, seq=seq) == light.hash:
                    return seq
        return None

    original = _original_seqs(rows, by_hash, resolve)
    problems: list[Problem] = []
    status: list[str] = []
    for index, light in enumerate(rows):
        if light.ok:
            status.append("ok")
            continue
        origin = original[index]
        full = scan.broken[light.seq]
        moved = origin is not None and origin != light.seq
        if moved and origin is not None and row_hash(full, light.prev, seq=origin) == light.hash:
            status.append(REORDERED)
            previous = problems[-1] if problems else None
            shift = light.seq - origin
            if (
                previous is not None
                and previous.kind == REORDERED
                and (previous.seq_last or previous.seq) == light.seq - 1
                and previous.shift == shift
            ):
                # A run renumbered by the same amount (rows pushed aside by an insertion or a
                # deletion) is one problem over a range.
                first = previous.seq or 0
                problems[-1] = Problem(
                    REORDERED,
                    first,
                    f"seqs {first}..{light.seq} hold the records written as seqs "
                    f"{first - shift}..{origin} (renumbered by {shift:+d})",
                    light.seq,
                    shift,
                )
            else:
                problems.append(
                    Problem(
                        REORDERED,
                        light.seq,
                        f"seq {light.seq} holds the record written as seq {origin} (re-ordered)",
                        shift=shift,
                    )
                )
        else:
            status.append(ALTERED)
            problems.append(
                Problem(
                    ALTERED,
                    light.seq,
                    f"seq {light.seq} does not match its hash: a field, prev_hash or hash was changed",
                )
            )

    # Deleted: seqs that no row holds, unless a re-ordered row came from there.
    accounted: set[int] = set()
    for i, light in enumerate(rows):
        origin = original[i]
        accounted.add(origin if status[i] == REORDERED and origin is not None else light.seq)
    scan.highest_original = highest = max(accounted, default=0)
    missing = [s for s in range(1, highest + 1) if s not in accounted]
    position = {light.seq: i for i, light in enumerate(rows)}
    inserted: set[int] = set()
    for first, last in _ranges(missing):
        what = f"seq {first}" if first == last else f"seqs {first}..{last}"
        after, before = position.get(last + 1), position.get(first - 1)
        before_hash = GENESIS if first == 1 else rows[before].hash if before is not None else None
        if after is not None and status[after] == "ok" and rows[after].prev == before_hash:
            # Writers allocate tail + 1: a row linked straight across a gap was never written there.
            inserted.add(after)
            problems.append(
                Problem(
                    INSERTED,
                    last + 1,
                    f"seq {last + 1} was inserted: it skips {what} and links straight to seq {first - 1}",
                )
            )
            continue
        last_seq = last if last != first else None
        problems.append(Problem(DELETED, first, f"{what} missing: deleted from the log", last_seq))

    # Inserted: a self-consistent row nothing follows, beside a genuine sibling with the same predecessor.
    referenced = {light.prev for i, light in enumerate(rows) if status[i] != ALTERED}
    siblings: dict[str, list[int]] = defaultdict(list)
    for i, light in enumerate(rows):
        if status[i] != ALTERED:
            siblings[light.prev].append(i)
    for group in siblings.values():
        if len(group) < 2:
            continue
        genuine = [i for i in group if status[i] == REORDERED or rows[i].hash in referenced]
        for i in group:
            if (
                status[i] == "ok"
                and i not in inserted
                and rows[i].hash not in referenced
                and (genuine or i != min(group))
            ):
                inserted.add(i)
                problems.append(
                    Problem(INSERTED, rows[i].seq, f"seq {rows[i].seq} was inserted: no record follows it")
                )

    # Broken links between neighbouring self-consistent rows: re-hashed or re-linked records.
    breaks: list[int] = []  # s: the link from seq s to seq s + 1 is broken (s = 0: the genesis)
    for i, light in enumerate(rows):
        if status[i] != "ok" or i in inserted:
            continue
        if light.seq == 1:
            if light.prev != GENESIS:
                breaks.append(0)
            continue
        j = position.get(light.seq - 1)
        if j is None or status[j] != "ok" or j in inserted:
            continue
        if light.prev != rows[j].hash:
            breaks.append(light.seq - 1)
    for first, last in _ranges(sorted(breaks)):
        if first == last and first > 0:
            problems.append(
                Problem(
                    REHASHED,
                    first,
                    f"seq {first} was changed and re-hashed: seq {first + 1} recorded another hash for it",
                )
            )
            continue
        for seq in range(first + 1, last + 1) if last > first else [first + 1]:
            problems.append(
                Problem(RELINKED, seq, f"seq {seq} was re-linked: its prev_hash and hash were rewritten")
            )
    return problems


def _check_checkpoints(
    *,
    checkpoints: Sequence[Checkpoint],
    anchors: Sequence[Checkpoint] | None,
    keys: Mapping[str, Ed25519PublicKey],
    scan: _Scan,
    hash_at: Mapping[int, str],
    problems: list[Problem],
    warnings: list[str],
) -> None:
    named = {s for p in problems for s in p.seqs()}
    in_db = {c.upto_seq: c for c in checkpoints}
    anchored = {a.upto_seq: a for a in anchors} if anchors is not None else {}
    newest_anchor = max(anchored, default=-1)
    every: dict[int, list[Checkpoint]] = defaultdict(list)
    for c in [*checkpoints, *(anchors or [])]:
        if c not in every[c.upto_seq]:
            every[c.upto_seq].append(c)

    def valid(c: Checkpoint, where: str) -> bool:
        key = keys.get(c.key_id)
        if key is None:
            problems.append(
                Problem(
                    UNKNOWN_KEY, c.upto_seq, f"{where} at seq {c.upto_seq}: unknown signing key {c.key_id}"
                )
            )
            return False
        if not signature_valid(c, key):
            problems.append(Problem(BAD_SIGNATURE, c.upto_seq, f"{where} at seq {c.upto_seq}: bad signature"))
            return False
        return True

    good: list[Checkpoint] = []
    for upto in sorted(every):
        versions = every[upto]
        ok_versions = [c for c in versions if valid(c, "checkpoint" if c in checkpoints else "anchor")]
        if len({(c.chain_hash) for c in ok_versions}) > 1:
            problems.append(
                Problem(CHECKPOINT_MISMATCH, upto, f"signed checkpoints for seq {upto} disagree on its hash")
            )
        good.extend(ok_versions[:1])
        if anchors is not None and upto in in_db and upto not in anchored:
            if upto < newest_anchor:
                problems.append(
                    Problem(
                        CHECKPOINT_NOT_ANCHORED,
                        upto,
                        f"the checkpoint at seq {upto} is missing from the anchor file (which was edited)",
                    )
                )
            else:  # made after the anchor file was read, or its anchor line was lost with the file's end
                warnings.append(f"the checkpoint at seq {upto} is newer than the last anchor")
        if anchors is not None and upto in anchored and upto not in in_db:
            warnings.append(
                f"the anchor at seq {upto} has no checkpoint row in the database "
                "(rolled back, or deleted); the anchor is checked against the chain"
            )

    present = max(scan.last_seq, scan.highest_original)
    beyond = [c for c in good if c.upto_seq > present]
    if beyond:
        top = max(c.upto_seq for c in beyond)
        first = present + 1
        what = f"seq {first} is" if first == top else f"seqs {first}..{top} are"
        problems.append(
            Problem(
                TRUNCATED,
                first,
                f"{what} missing: deleted from the end of the log after a checkpoint signed seq {top}",
                top if top != first else None,
            )
        )
    previous = 0
    for c in sorted(good, key=lambda c: c.upto_seq):
        if c.upto_seq > present:
            break
        if c.upto_seq == 0:
            if c.chain_hash != GENESIS:
                problems.append(Problem(CHECKPOINT_MISMATCH, 0, "the checkpoint of the empty log is wrong"))
            continue
        stored = hash_at.get(c.upto_seq)
        if (
            stored is not None
            and stored != c.chain_hash
            and not any(s in named for s in range(previous + 1, c.upto_seq + 1))
        ):
            first = previous + 1
            problems.append(
                Problem(
                    REWRITTEN,
                    first,
                    f"seqs {first}..{c.upto_seq} were rewritten: the chain at seq {c.upto_seq} differs from "
                    f"the checkpoint signed at {c.signed_at}",
                    c.upto_seq if c.upto_seq != first else None,
                )
            )
        previous = c.upto_seq


def verify_audit(
    connection: Connection,
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey],
    anchors: Sequence[Checkpoint] | None,
) -> VerifyReport:
    """Walk the whole chain and check the checkpoints and anchors; name every problem found.

    `public_key`: the checkpoint key (or keys, after a rotation). `anchors`: the checkpoints read
    from the anchor file (`read_anchors`), or None when there is none to compare with (a warning).
    Read-only; run it in a `snapshot_transaction` (one snapshot, and the walk streams its rows).
    """
    keys = public_keys_by_id(public_key)
    checkpoints = stored_checkpoints(connection)
    watched = {c.upto_seq for c in checkpoints} | {a.upto_seq for a in anchors or []}
    scan = _scan(connection, watched, keep=False)
    problems: list[Problem] = []
    warnings: list[str] = []
    if scan.anomalous:
        scan = _scan(connection, watched, keep=True)
        found = _diagnose(scan)
        problems.extend(found or [Problem(ALTERED, None, "the chain is inconsistent (no record named)")])
    if anchors is None:
        warnings.append("no anchor file: deletions at the end of the log can only be found from checkpoints")
    _check_checkpoints(
        checkpoints=checkpoints,
        anchors=anchors,
        keys=keys,
        scan=scan,
        hash_at=scan.hashes_at,
        problems=problems,
        warnings=warnings,
    )
    problems.sort(key=lambda p: (p.seq if p.seq is not None else -1, p.kind))
    return VerifyReport(
        records=scan.records,
        last_seq=scan.last_seq,
        checkpoints=len(checkpoints),
        anchors=None if anchors is None else len(anchors),
        problems=tuple(problems),
        warnings=tuple(warnings),
    )
