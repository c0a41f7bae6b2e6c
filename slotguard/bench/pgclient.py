"""The e2e load generator's Postgres client: one autocommit connection driven through libpq's asynchronous
calls (psycopg's ``pq`` layer), each change one prepared statement -- one round trip, little Python.

Why not psycopg's ``AsyncConnection.execute``: the generator runs on the same two cores as the pipeline it
measures, and at 2,000 single-statement commits/s that cost 237-243 µs of CPU per statement (0.47-0.49 of a
core; scratch ``pgmicro.py`` against the machine's Postgres, eight connections); these calls cost 128-142 µs
(0.26-0.28 of a core) in the same loop. The bench measures slotguard, not its load generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq

from slotguard.bench.errors import BenchError


class PgClientError(BenchError):
    """A statement failed, or the connection did."""


class PgClient:
    """Run prepared statements one at a time on one autocommit connection (the caller awaits each)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._pg.nonblocking = 1
        self._loop = asyncio.get_running_loop()
        self._results: list[pq.abc.PGresult] = []
        self._waiting: asyncio.Future[list[pq.abc.PGresult]] | None = None
        self._loop.add_reader(self._pg.socket, self._readable)

    @classmethod
    async def connect(cls, url: str, statements: Mapping[bytes, bytes]) -> PgClient:
        """Connect (autocommit) and prepare ``statements`` (name → SQL with ``$n`` parameters)."""
        conn: psycopg.Connection[Any] = await asyncio.to_thread(
            lambda: psycopg.Connection.connect(url, autocommit=True)
        )
        client = cls(conn)
        try:
            for name, sql in statements.items():
                client._pg.send_prepare(name, sql)
                await client._flush()
                _check(await client._wait(), name)
        except BaseException:
            client.close()
            raise
        return client

    async def first_value(self, name: bytes, params: Sequence[bytes | None]) -> bytes:
        """Run prepared statement ``name`` (text parameters; autocommit, so it commits) and return the first
        column of its first row as text."""
        self._pg.send_query_prepared(name, params)
        await self._flush()
        result = _check(await self._wait(), name)
        value = result.get_value(0, 0) if result.ntuples else None
        if value is None:
            raise PgClientError(f"{name.decode()}: no row returned")
        return value

    def close(self) -> None:
        self._loop.remove_reader(self._pg.socket)
        self._conn.close()

    async def _flush(self) -> None:
        while self._pg.flush():  # 1: not all sent yet (a full socket buffer): wait until it takes more
            writable: asyncio.Future[None] = self._loop.create_future()
            self._loop.add_writer(self._pg.socket, _resolve, writable)
            try:
                await writable
            finally:
                self._loop.remove_writer(self._pg.socket)

    def _wait(self) -> asyncio.Future[list[pq.abc.PGresult]]:
        self._waiting = self._loop.create_future()
        return self._waiting

    def _readable(self) -> None:
        waiting = self._waiting
        try:
            self._pg.consume_input()
            while not self._pg.is_busy():
                result = self._pg.get_result()
                if result is None:  # the statement's results are complete
                    results, self._results, self._waiting = self._results, [], None
                    if waiting is not None and not waiting.done():
                        waiting.set_result(results)
                    return
                self._results.append(result)
        except psycopg.Error as exc:
            # A dead connection is readable forever: stop watching it and fail the statement waiting on it.
            self._loop.remove_reader(self._pg.socket)
            if waiting is not None and not waiting.done():
                waiting.set_exception(PgClientError(f"Postgres connection failed: {exc}"))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _check(results: list[pq.abc.PGresult], name: bytes) -> pq.abc.PGresult:
    ok = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
    for result in results:
        if result.status not in ok:
            lines = (result.error_message or b"").decode(errors="replace").strip().splitlines()
            message = lines[0] if lines else ""  # the primary message; DETAIL and HINT lines follow it
            raise PgClientError(f"{name.decode()}: {message or pq.ExecStatus(result.status).name}")
    if not results:
        raise PgClientError(f"{name.decode()}: no result")
    return results[-1]
