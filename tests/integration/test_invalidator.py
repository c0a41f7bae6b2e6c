"""The invalidation script on a real Redis: one chunk per 1,000 keys unlinks the keys and their leases,
announces them, and schedules their second delete as one member per chunk; the drain removes every due
chunk (and members of the older one-key-per-member format)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any

import pytest
import redis

from processor.worker.invalidator import UNLINK_CHUNK, RedisInvalidator
from processor.worker.leases import LEASE_SUFFIX
from processor.worker.metrics import WorkerMetrics
from schemas.connections import RedisConnection

pytestmark = pytest.mark.integration


def _invalidator(dev_stack: Any, key_prefix: str, now: list[float]) -> RedisInvalidator:
    return RedisInvalidator(
        RedisConnection.parse(dev_stack.redis_url),
        metrics=WorkerMetrics(),
        wait_replicas=0,
        wait_timeout=1.0,
        key_prefix=key_prefix,
        second_delete_after=2.0,
        guard_window=1.0,
        revoke_leases=True,
        clock=lambda: now[0],
    )


async def _closing(invalidator: RedisInvalidator, step: Awaitable[int]) -> int:
    try:
        return await step
    finally:
        await invalidator.close()


def test_a_batch_of_chunks_unlinks_keys_and_leases_and_schedules_one_member_per_chunk(
    dev_stack: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    """2,500 keys: all and their leases are gone, the count says how many existed, each chunk was
    announced once, and the schedule holds three members -- [due, key, ...] -- covering every key."""
    keys = [f"{key_prefix}slot:{i}" for i in range(2 * UNLINK_CHUNK + 500)]
    redis_client.mset({k: "cached" for k in keys[::2]})
    redis_client.set(keys[1] + LEASE_SUFFIX, "lease")
    now = [1000.0]
    invalidator = _invalidator(dev_stack, key_prefix, now)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(invalidator.channel)
    existed = asyncio.run(_closing(invalidator, invalidator.unlink(keys)))
    assert existed == len(keys[::2]) + 1
    assert redis_client.exists(*keys) == 0
    assert redis_client.exists(keys[1] + LEASE_SUFFIX) == 0
    announced: list[str] = []
    deadline = time.monotonic() + 10
    while len(announced) < len(keys) and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)  # None for the ignored subscribe confirmation too
        if message is not None:
            announced.extend(json.loads(message["data"]))
    pubsub.close()
    assert announced == keys
    members: list[tuple[str, float]] = redis_client.zrange(  # type: ignore[assignment]
        invalidator.schedule_key, 0, -1, withscores=True
    )
    assert len(members) == 3
    scheduled: list[str] = []
    for member, score in members:
        due, *chunk = json.loads(member)
        assert due == score == 1002.0
        scheduled.extend(chunk)
    assert sorted(scheduled) == sorted(keys)


def test_the_drain_removes_every_due_chunk_and_old_single_key_members(
    dev_stack: Any, redis_client: redis.Redis, key_prefix: str
) -> None:
    """More chunks than one drain call takes, plus a member in the older one-key format: all are due,
    all are unlinked again (stale fills caught and counted), and the schedule is empty afterwards; a chunk
    not yet due stays."""
    now = [1000.0]
    invalidator = _invalidator(dev_stack, key_prefix, now)
    batches = [[f"{key_prefix}slot:{b}:{i}" for i in range(3)] for b in range(20)]
    legacy = f"{key_prefix}slot:legacy"
    stale = [batches[0][0], batches[19][2], legacy]
    later = f"{key_prefix}slot:later"

    async def scenario() -> int:
        for keys in batches:
            await invalidator.unlink(keys)
        redis_client.zadd(invalidator.schedule_key, {legacy: 1001.0})
        redis_client.mset({k: "stale fill" for k in stale})
        now[0] = 1500.0
        await invalidator.unlink([later])  # due at 1502: not yet
        return await invalidator.second_delete_due(limit=8)

    assert asyncio.run(_closing(invalidator, scenario())) == len(stale)
    assert redis_client.exists(*stale) == 0
    remaining: list[str] = redis_client.zrange(invalidator.schedule_key, 0, -1)  # type: ignore[assignment]
    assert [json.loads(m)[1:] for m in remaining] == [[later]]
