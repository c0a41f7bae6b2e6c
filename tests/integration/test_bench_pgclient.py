"""The e2e load generator's Postgres client against real Postgres: prepared statements commit one by one,
and a failed statement is one clear error that leaves the connection usable."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from slotguard.bench.pgclient import PgClient, PgClientError

pytestmark = pytest.mark.integration

STATEMENTS = {
    b"half": b"SELECT 100 / $1::int",
    b"note": b"INSERT INTO appointments (company_id, starts_at, source) VALUES ($1, $2, 'bench') RETURNING id",
}


def test_a_prepared_statement_returns_its_first_value_and_commits(dev_stack: Any) -> None:
    """Each statement commits on its own (autocommit): another connection sees the row at once."""

    async def run() -> int:
        client = await PgClient.connect(dev_stack.database_url, STATEMENTS)
        try:
            assert await client.first_value(b"half", [b"4"]) == b"25"
            return int(await client.first_value(b"note", [b"15", b"2045-01-02T00:00:00+00:00"]))
        finally:
            client.close()

    row = asyncio.run(run())
    with psycopg.connect(dev_stack.database_url) as conn:
        assert conn.execute("SELECT source FROM appointments WHERE id = %s", (row,)).fetchone() == ("bench",)


def test_a_failed_statement_is_one_error_line_and_the_connection_stays_usable(dev_stack: Any) -> None:
    async def run() -> tuple[str, bytes]:
        client = await PgClient.connect(dev_stack.database_url, STATEMENTS)
        try:
            with pytest.raises(PgClientError) as failed:
                await client.first_value(b"half", [b"0"])
            return str(failed.value), await client.first_value(b"half", [b"5"])
        finally:
            client.close()

    message, after = asyncio.run(run())
    assert message.startswith("half: ERROR:"), message
    assert "division by zero" in message
    assert "\n" not in message
    assert after == b"20"


def test_a_statement_that_does_not_prepare_fails_the_connect_naming_it(dev_stack: Any) -> None:
    async def run() -> None:
        await PgClient.connect(dev_stack.database_url, {b"broken": b"SELECT FROM nowhere_at_all"})

    with pytest.raises(PgClientError, match=r"^broken: ERROR:.*nowhere_at_all"):
        asyncio.run(run())
