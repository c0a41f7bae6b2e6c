"""The lease protocol against real Redis: concurrent fillers racing an invalidation; a revoked lease's put
never lands, a lease taken after the invalidation fills normally."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import redis.asyncio as aioredis

from processor.worker.leases import LEASE_SUFFIX, LeasedCache, invalidate

pytestmark = pytest.mark.integration


def test_fillers_that_leased_before_an_invalidation_never_land_after_it(
    dev_stack: Any, key_prefix: str
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(dev_stack.redis_url)
        cache = LeasedCache(client)
        rnd = random.Random(11)
        try:
            for round_ in range(20):
                key = f"{key_prefix}cal_slots_15_1_123_round{round_}"
                leased = asyncio.Event()
                invalidated = asyncio.Event()
                tokens: list[str] = []

                fillers = [
                    asyncio.create_task(
                        _filler(cache, key, tokens, leased, invalidated, rnd.uniform(0.0, 0.05))
                    )
                    for _ in range(8)
                ]
                await leased.wait()
                await invalidate(client, [key])  # the booking's invalidation
                invalidated.set()
                landed = await asyncio.gather(*fillers)
                assert not any(landed), f"round {round_}: a revoked lease's put landed"
                assert await client.get(key) is None
                # A reader after the invalidation leases and fills normally.
                fresh = await cache.get_or_compute(key, lambda: _value(b"fresh: slot taken"))
                assert fresh == b"fresh: slot taken"
                assert await client.get(key) == b"fresh: slot taken"
                assert await client.exists(key + LEASE_SUFFIX) == 0
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_hit_needs_no_lease(dev_stack: Any, key_prefix: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(dev_stack.redis_url)
        try:
            await client.set(f"{key_prefix}k", b"v")
            assert await LeasedCache(client).get_or_lease(f"{key_prefix}k") == (b"v", None)
        finally:
            await client.aclose()

    asyncio.run(main())


async def _filler(
    cache: LeasedCache,
    key: str,
    tokens: list[str],
    leased: asyncio.Event,
    invalidated: asyncio.Event,
    delay: float,
) -> bool:
    """A reader that missed: lease, compute slowly (a stale answer), try to fill -- after the invalidation.

    Its put waits for the invalidation to have returned: a put that landed before it would be a legitimate
    fill (the invalidation then deletes it), and whether one did depended on how long the eight leases took
    on the machine -- CI read "round 13: a revoked lease's put landed" once on a loaded machine."""
    value, token = await cache.get_or_lease(key)
    assert value is None
    assert token is not None
    tokens.append(token)
    if len(tokens) == 8:
        leased.set()
    await invalidated.wait()
    await asyncio.sleep(delay)  # the rest of the slow availability query + Cal.com call, simulated
    return await cache.put(key, token, b"stale: slot free", 300)


async def _value(value: bytes) -> bytes:
    return value
