"""The one clock. Code that depends on the time (sessions, lockout, tokens, break-the-glass,
audit) asks `now()`, so tests can move time instead of sleeping (checklist A2, A5, A9, P7)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_offset = timedelta(0)


def now() -> datetime:
    """The current time, timezone-aware UTC (shifted only by `travel` in tests)."""
    return datetime.now(UTC) + _offset


def advance(delta: timedelta) -> None:
    """Move the clock forward (or back, with a negative delta) for the whole process."""
    global _offset  # noqa: PLW0603 - the process has one clock by design
    with _lock:
        _offset += delta


@contextmanager
def travel(delta: timedelta = timedelta(0)) -> Iterator[None]:
    """Shift the clock by `delta` inside the block (further `advance` calls add up); restore after."""
    global _offset  # noqa: PLW0603
    with _lock:
        saved = _offset
        _offset = saved + delta
    try:
        yield
    finally:
        with _lock:
            _offset = saved
