"""The stale-fill race on the real stack: a slow reader computed "free" before a booking and writes it after the
worker's delete. Plain invalidation leaves the stale answer cached; the keyspace guard and the second delete
remove it; a leased reader's write is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from processor.worker.leases import LeasedCache
from tests.integration.worker_harness import (
    PrivateRedis,
    Topics,
    WorkerProcess,
    change,
    make_topics,
    produce,
    row,
    window_keys,
    worker_settings,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STALE = b'{"free": ["14:00"]}'


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Any) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker{len(started)}.log")
        started.append(w)
        w.wait_assigned()
        return w

    yield start
    for w in started:
        w.stop()


def _wait_guard_watching(worker: WorkerProcess) -> None:
    wait_until(
        lambda: worker.metric("slotguard_guard_active") == 1,
        timeout=30,
        what=lambda: f"the keyspace guard to subscribe; log:\n{worker.log_tail()}",
    )


def _book(stack: Any, topics: Topics, appointment: int, starts: datetime) -> None:
    booked = row(appointment, starts=starts, status="booked")
    produce(
        stack.kafka_bootstrap,
        topics.appointments,
        [(str(appointment).encode(), change("c", None, booked), None)],
    )


def _barrier(
    stack: Any, topics: Topics, client: redis.Redis, key_prefix: str, worker: WorkerProcess, appointment: int
) -> None:
    """A later booking's keys gone: the worker has handled everything produced before it."""
    starts = datetime(2031, 1, 1, 9, tzinfo=UTC) + timedelta(hours=appointment % 1000)
    sentinel = window_keys(key_prefix, 15, 1, 123, starts)
    for key in sentinel:
        client.set(key, b"x", ex=300)
    _book(stack, topics, appointment, starts)
    wait_until(
        lambda: worker.alive_or_fail() and not any(client.exists(k) for k in sentinel),
        timeout=60,
        what=lambda: f"the barrier booking's keys to go; log:\n{worker.log_tail()}",
    )


def _race(
    stack: Any,
    topics: Topics,
    client: redis.Redis,
    key_prefix: str,
    worker: WorkerProcess,
    before_write: Callable[[str], None] | None = None,
) -> str:
    """The race, step by step; returns the key the slow reader wrote its stale answer to."""
    starts = datetime(2030, 6, 3, 14, tzinfo=UTC)
    before_hour, key, _after_hour = window_keys(key_prefix, 15, 1, 123, starts)
    client.set(before_hour, b"cached", ex=300)  # a neighbour answer that tells when the delete happened
    # The slow reader misses `key` and computes "14:00 free" from the database.
    if before_write is not None:
        before_write(key)
    else:
        assert client.get(key) is None
    _book(stack, topics, 501, starts)
    wait_until(
        lambda: worker.alive_or_fail() and not client.exists(before_hour),
        timeout=60,
        what=lambda: f"the booking's delete; log:\n{worker.log_tail()}",
    )
    return key


def test_plain_invalidation_leaves_a_slow_readers_stale_fill_cached(
    dev_stack: Any, topics: Topics, key_prefix: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    worker = start_worker(
        worker_settings(dev_stack, topics, key_prefix, second_delete_after=0, guard_window=0)
    )
    client = redis.Redis.from_url(dev_stack.redis_url)
    key = _race(dev_stack, topics, client, key_prefix, worker)
    client.set(key, STALE, ex=300)  # lands after the delete
    _barrier(dev_stack, topics, client, key_prefix, worker, 502)
    assert client.get(key) == STALE, "plain invalidation removed a fill that landed after its delete"


@pytest.mark.parametrize(
    "closer",
    [
        pytest.param({"guard_window": 30.0, "second_delete_after": 0}, id="keyspace-guard"),
        pytest.param({"guard_window": 0, "second_delete_after": 1.0}, id="second-delete"),
    ],
)
def test_the_guarded_worker_removes_a_stale_fill_that_lands_after_its_delete(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    start_worker: Callable[..., WorkerProcess],
    closer: dict[str, float],
) -> None:
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    worker = start_worker(worker_settings(dev_stack, topics, key_prefix, **closer))
    client = redis.Redis.from_url(dev_stack.redis_url)
    if closer["guard_window"]:
        _wait_guard_watching(worker)
    key = _race(dev_stack, topics, client, key_prefix, worker)
    client.set(key, STALE, ex=300)  # lands after the delete
    wait_until(
        lambda: worker.alive_or_fail() and not client.exists(key),
        timeout=30,
        what=lambda: f"the stale fill {key} to be deleted; log:\n{worker.log_tail()}",
    )
    counter = "slotguard_guard_deletes_total" if closer["guard_window"] else "slotguard_second_deletes_total"
    assert worker.metric(counter) >= 1


def test_a_leased_readers_fill_after_the_delete_is_refused(
    dev_stack: Any, topics: Topics, key_prefix: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    import asyncio

    import redis.asyncio as aioredis

    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    worker = start_worker(
        worker_settings(dev_stack, topics, key_prefix, second_delete_after=0, guard_window=0)
    )
    client = redis.Redis.from_url(dev_stack.redis_url)
    tokens: dict[str, str] = {}

    async def lease(key: str) -> None:
        async with aioredis.Redis.from_url(dev_stack.redis_url) as conn:
            value, token = await LeasedCache(conn).get_or_lease(key)
            assert value is None
            assert token is not None
            tokens[key] = token

    async def put(key: str) -> bool:
        async with aioredis.Redis.from_url(dev_stack.redis_url) as conn:
            return await LeasedCache(conn).put(key, tokens[key], STALE, 300)

    key = _race(dev_stack, topics, client, key_prefix, worker, before_write=lambda k: asyncio.run(lease(k)))
    assert asyncio.run(put(key)) is False, "a lease taken before the booking survived its delete"
    assert client.get(key) is None


def test_the_guard_leaves_a_fresh_fill_alone_when_nobody_was_filling_at_the_delete(
    dev_stack: Any, topics: Topics, key_prefix: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    worker = start_worker(
        worker_settings(dev_stack, topics, key_prefix, guard_window=30.0, second_delete_after=0)
    )
    _wait_guard_watching(worker)
    client = redis.Redis.from_url(dev_stack.redis_url)
    # Nobody misses before the booking: the key is simply not cached.
    key = _race(dev_stack, topics, client, key_prefix, worker, before_write=lambda _key: None)
    assert client.get(key) is None  # a fresh reader misses after the delete...
    client.set(key, b'{"free": []}', ex=300)  # ...and fills with the truth
    _barrier(dev_stack, topics, client, key_prefix, worker, 503)
    assert client.get(key) == b'{"free": []}', "the guard deleted a fill that began after the delete"
    assert worker.metric("slotguard_guard_deletes_total") == 0


def test_where_redis_forbids_config_the_guard_degrades_and_the_second_delete_still_closes_the_race(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Managed Redis renames or disables CONFIG: the guard cannot switch keyspace events on, says so, and
    the second delete -- which then covers every invalidation -- removes the stale fill."""
    managed = PrivateRedis(tmp_path / "redis", extra_args=["--rename-command", "CONFIG", ""])
    managed.start()
    try:
        make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
        settings = worker_settings(
            dev_stack,
            topics,
            key_prefix,
            redis_url=managed.url,
            guard_window=30.0,
            second_delete_after=1.0,
        )
        worker = start_worker(settings)
        client = redis.Redis.from_url(managed.url)
        wait_until(
            lambda: "cannot check or set notify-keyspace-events" in worker.log_tail(200),
            timeout=30,
            what=lambda: f"the guard's warning; log:\n{worker.log_tail()}",
        )
        assert worker.metric("slotguard_guard_active") == 0
        key = _race(dev_stack, topics, client, key_prefix, worker)
        client.set(key, STALE, ex=300)  # lands after the delete; no keyspace event tells the guard
        wait_until(
            lambda: worker.alive_or_fail() and not client.exists(key),
            timeout=30,
            what=lambda: f"the second delete of {key}; log:\n{worker.log_tail()}",
        )
        assert worker.metric("slotguard_second_deletes_total") >= 1
    finally:
        managed.stop()
