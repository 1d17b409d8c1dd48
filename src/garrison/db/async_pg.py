"""PostgreSQL connections for code running on the server's event loop (psycopg's asyncio API).

A read by id on PostgreSQL is two round trips (its lookups, then its audit) and little work in
between. Run in a worker thread, as the synchronous engine needs, each read paid the hand-over
to the thread and back; run on the loop with a blocking connection, the loop stalled while the
database answered. With these connections the loop awaits the answer and serves other requests
meanwhile (`garrison.web.fhir_api`, `garrison.audit.sink`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine

from garrison.db.engine import NEVER_PREPARE_BY_COUNT

_T = TypeVar("_T")
_IDLE = TransactionStatus.IDLE


def connect_arguments(engine: Engine) -> dict[str, Any]:
    """psycopg's connection arguments for the database of a (PostgreSQL) engine, in autocommit:
    each statement its own transaction (READ COMMITTED)."""
    _args, params = engine.dialect.create_connect_args(engine.url)
    return {**params, "autocommit": True, "prepare_threshold": NEVER_PREPARE_BY_COUNT}


class AsyncConnections:
    """A small pool of asyncio connections in autocommit, opened as needed and kept.

    At most `size` are open; a caller beyond that waits for one to be returned. A connection that
    failed is closed instead of returned, and `run` does its work once more on a new connection
    when a kept one turns out dead (the server restarted, say), as the synchronous pool's ping
    would have found (`garrison.db.engine._ping_idle_connections`). Used from one event loop at a
    time; nothing in it awaits between looking at its state and changing it.
    """

    def __init__(self, engine: Engine, size: int = 8) -> None:
        self._arguments = connect_arguments(engine)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._size = size
        self._open = 0
        self._waiting: list[asyncio.Future[None]] = []

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        """`await work(connection)` on a pooled connection."""
        connection, kept = await self._take()
        try:
            result = await work(connection)
        except Exception:
            lost = connection.broken or connection.closed
            self._put_back(connection)
            if not (kept and lost):
                raise
            # A kept connection had died: once more on a new one.
            connection, _ = await self._take(fresh=True)
            try:
                result = await work(connection)
            except BaseException:
                self._put_back(connection)
                raise
        except BaseException:
            # Cancelled mid-statement, say: what the connection is doing is unknown.
            self._discard(connection)
            raise
        self._put_back(connection)
        return result

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            await connection.close()

    @property
    def open(self) -> int:
        """How many connections are open (for tests and metrics)."""
        return self._open

    async def _take(self, *, fresh: bool = False) -> tuple[psycopg.AsyncConnection[Any], bool]:
        """A connection, and whether it was kept from before (rather than opened now)."""
        while not fresh and not self._idle and self._open >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                # Cancelled, perhaps just after being woken: pass the wake-up on.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        if self._idle and not fresh:
            return self._idle.pop(), True
        self._open += 1
        try:
            return await psycopg.AsyncConnection.connect(**self._arguments), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _put_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Keep `connection` for the next caller if it can still serve (in autocommit a failed
        statement leaves it idle), else close it."""
        if connection.broken or connection.closed or connection.info.transaction_status != _IDLE:
            self._discard(connection)
            return
        self._idle.append(connection)
        self._wake_one()

    def _discard(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._open -= 1
        # Closing a psycopg connection only frees the client's side: no round trip to wait for.
        connection.pgconn.finish()
        self._wake_one()

    def _wake_one(self) -> None:
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)
                return
