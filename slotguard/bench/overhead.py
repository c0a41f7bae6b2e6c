"""What capturing changes costs the booking sources: write latency with the relay streaming vs stopped.

Rounds interleave the two conditions (stopped, streaming, stopped, streaming, ...) so drift of a shared,
noisy machine hits both alike. Each round times ``writes`` bookings as a booking source issues them -- an
INSERT, then an UPDATE of the same row, each its own transaction -- from the client's side. With the relay
stopped its replication slot stays (inactive), so the comparison is "decoding and streaming" vs not.

After each relay start, as many writes again go unmeasured: the first seconds of a fresh relay are its
JVM compiling Debezium's code on the same two cores, which is start-up, not what streaming costs a write
(medians of 0.04-0.07 ms moved by half between runs with the streaming rounds starting cold). The ratio of
each round is reported too, so the spread shows next to the figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

INSERT = (
    "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source) "
    "VALUES (15, 1, 1, %s, %s, 'booked', 'bench-overhead') RETURNING id"
)
UPDATE = "UPDATE appointments SET status = 'cancelled', updated_at = now() WHERE id = %s"
BASE = datetime(2050, 1, 3, tzinfo=UTC)


def write_latencies_ms(database_url: str, writes: int, offset: int = 0) -> list[float]:
    """Client-side latency (ms) of ``writes`` INSERTs and as many UPDATEs, each committed on its own."""
    out: list[float] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i in range(writes):
            starts = BASE + timedelta(hours=offset + i)
            began = time.perf_counter()
            row = conn.execute(INSERT, (starts, starts + timedelta(hours=1))).fetchone()
            out.append((time.perf_counter() - began) * 1000)
            assert row is not None
            began = time.perf_counter()
            conn.execute(UPDATE, (row[0],))
            out.append((time.perf_counter() - began) * 1000)
    return out


def write_overhead(
    database_url: str,
    *,
    relay_on: Callable[[], None],
    relay_off: Callable[[], None],
    rounds: int = 5,
    writes: int = 300,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Median write latency streaming / stopped, over interleaved rounds."""
    off: list[float] = []
    on: list[float] = []
    per_round: list[float] = []
    for r in range(rounds):
        progress(f"write overhead: round {r + 1}/{rounds}, relay stopped")
        relay_off()
        stopped = write_latencies_ms(database_url, writes, offset=(3 * r) * writes)
        progress(f"write overhead: round {r + 1}/{rounds}, relay streaming")
        relay_on()
        write_latencies_ms(database_url, writes, offset=(3 * r + 1) * writes)  # the relay's start-up
        streaming = write_latencies_ms(database_url, writes, offset=(3 * r + 2) * writes)
        per_round.append(round(statistics.median(streaming) / statistics.median(stopped), 3))
        off += stopped
        on += streaming
    median_on, median_off = statistics.median(on), statistics.median(off)
    return {
        "ratio": round(median_on / median_off, 3),
        "round_ratios": per_round,
        "median_ms_streaming": round(median_on, 3),
        "median_ms_stopped": round(median_off, 3),
        "p99_ms_streaming": round(statistics.quantiles(on, n=100)[98], 3),
        "p99_ms_stopped": round(statistics.quantiles(off, n=100)[98], 3),
        "writes_per_condition": len(on),
        "rounds": rounds,
    }
