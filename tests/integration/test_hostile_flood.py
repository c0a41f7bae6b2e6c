"""Hostile input on the real local stack: nothing a record holds may stop the worker or stall a partition."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.worker_harness import (
    BASE,
    Topics,
    WorkerProcess,
    change,
    make_topics,
    produce,
    read_topic,
    row,
    still_there,
    window_keys,
    worker_settings,
)
from tests.support.hostile import CLASSES, hostile_records
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

#: The flood's seed: a failure names it, and the same seed makes the same records.
SEED = 20261205
HOSTILE = 5000
#: One valid booking after every this many hostile records.
VALID_EVERY = 50


def test_a_seeded_flood_of_hostile_records_neither_stops_the_worker_nor_loses_a_valid_change(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """5,000 hostile records of every class in tests/support/hostile.py, with a valid booking after every
    50th: the worker keeps its pid and /healthz 200 throughout, every hostile record is dead-lettered
    exactly once with its reason (a too-large one truncated, with its size and SHA-256), every valid
    booking's keys are gone, and no key of another tenant is touched."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 2})
    hostile = hostile_records(SEED, HOSTILE)
    assert len({h.cls for h in hostile}) == len(CLASSES) >= 20
    records: list[tuple[bytes | None, bytes | None, int | None]] = []
    valid: list[str] = []
    for i, bad in enumerate(hostile):
        records.append((f"bad-{i}".encode(), bad.value, i % 2))
        if i % VALID_EVERY == 0:
            n = i // VALID_EVERY
            starts = BASE + timedelta(hours=3 * n)
            valid += window_keys(key_prefix, 15, 1, 123, starts)
            records.append((f"ok-{n}".encode(), change("c", None, row(100 + n, starts=starts)), n % 2))
    # Other tenants' keys in the same hours: company 16, and company 15's branch 2.
    bystanders = [
        key
        for n in range(HOSTILE // VALID_EVERY)
        for key in window_keys(key_prefix, 16, 1, 123, BASE + timedelta(hours=3 * n))
        + window_keys(key_prefix, 15, 2, 123, BASE + timedelta(hours=3 * n))
    ]
    for key in valid + bystanders:
        redis_client.set(key, "cached")
    produce(dev_stack.kafka_bootstrap, topics.appointments, records, max_request_size=8 << 20)

    worker = WorkerProcess(worker_settings(dev_stack, topics, key_prefix), tmp_path / "worker.log")
    workers.append(worker)
    pid = worker.proc.pid
    worker.wait_assigned()
    health_seen: list[int] = []

    def healthy_and_done() -> bool:
        assert worker.alive_or_fail()
        assert worker.proc.pid == pid
        health = worker.healthz()
        assert health is not None, "/healthz did not answer"
        assert health[0] == 200, f"/healthz answered {health}"
        health_seen.append(health[0])
        return not still_there(redis_client, valid)

    wait_until(
        healthy_and_done,
        timeout=300,
        what=lambda: (
            f"valid keys still present: {still_there(redis_client, valid)[:5]}; log:\n{worker.log_tail()}"
        ),
    )
    dead = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=HOSTILE, timeout=300)
    by_key = Counter(r.key for r in dead)
    expected = {f"bad-{i}".encode() for i in range(HOSTILE)}
    assert set(by_key) == expected, (
        f"dead letters that are not hostile: {sorted(k or b'' for k in set(by_key) - expected)[:5]}"
    )
    twice = [k for k, n in by_key.items() if n > 1]
    assert not twice, f"dead-lettered more than once: {twice[:5]}"
    for record in dead:
        headers = dict(record.headers)
        bad = hostile[int(record.key.removeprefix(b"bad-"))]  # type: ignore[union-attr]
        assert headers.get("slotguard.error"), f"{bad.cls}: a dead letter without a reason"
        assert headers.get("slotguard.error.class"), f"{bad.cls}: a dead letter without an error class"
        if len(bad.value) > 1_000_000:
            assert headers.get("slotguard.truncated") == b"value", bad.cls
            assert headers["slotguard.original-size"] == str(len(bad.value)).encode()
            assert headers["slotguard.original-sha256"] == hashlib.sha256(bad.value).hexdigest().encode()
            assert bad.value.startswith(record.value or b"-")
        else:
            assert record.value == bad.value, f"{bad.cls}: the dead letter's bytes differ from the record's"
    assert still_there(redis_client, bystanders) == bystanders
    assert worker.proc.pid == pid
    assert worker.alive_or_fail()
    assert health_seen
    assert set(health_seen) == {200}


def test_a_record_that_kills_the_worker_three_times_is_dead_lettered_on_the_next_start(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """A record the worker dies on outright (SIGKILL while deriving it, as a segfault would) kills it three
    starts in a row; the fourth start dead-letters it with "crashed the worker 3 times", counts it in a
    metric, handles the records around it and stays up."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    first, poison, last = BASE, BASE + timedelta(days=1), BASE + timedelta(days=2)
    around = window_keys(key_prefix, 15, 1, 123, first) + window_keys(key_prefix, 15, 1, 123, last)
    for key in around:
        redis_client.set(key, "cached")
    produce(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [(b"a", change("c", None, row(1, starts=first)), 0),
         (b"poison", change("c", None, row(2, starts=poison, notes="KILL-ME")), 0),
         (b"b", change("c", None, row(3, starts=last)), 0)],
    )  # fmt: skip
    settings = worker_settings(dev_stack, topics, key_prefix, crash_loop_after=3)
    command = ("-m", "tests.support.crashing_worker")
    for death in range(1, 4):
        worker = WorkerProcess(settings, tmp_path / f"worker{death}.log", command)
        workers.append(worker)
        try:
            code = worker.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"start {death} did not die on the poison record:\n{worker.log_tail()}"
            ) from None
        assert code == -signal.SIGKILL, f"start {death} exited with {code}:\n{worker.log_tail()}"
        assert still_there(redis_client, around) == around, "keys deleted before the batch was handled"

    worker = WorkerProcess(settings, tmp_path / "worker4.log", command)
    workers.append(worker)
    wait_until(
        lambda: worker.alive_or_fail() and not still_there(redis_client, around),
        timeout=120,
        what=lambda: f"keys around the poison record still present; log:\n{worker.log_tail()}",
    )
    dead = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=1)
    assert [r.key for r in dead] == [b"poison"]
    headers = dict(dead[0].headers)
    assert headers["slotguard.error"] == b"crashed the worker 3 times"
    assert headers["slotguard.error.class"] == b"CrashLoop"
    wait_until(
        lambda: worker.metric("slotguard_crash_loop_dead_letters_total") == 1,
        timeout=30,
        what=lambda: (
            f"crash_loop_dead_letters_total {worker.metric('slotguard_crash_loop_dead_letters_total')}"
        ),
    )
    assert "crashed the worker 3 times in a row" in worker.log_path.read_text()
    assert worker.alive_or_fail()
