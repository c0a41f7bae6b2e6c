"""A flush of many cached keys while the pipeline runs: how long, how hard on Redis, and what it does to the
worker's commit → key gone latency meanwhile.

``keys`` keys of one company (not the e2e load's) are cached, then flushed by company pattern -- every
``SCAN`` step still walks the whole keyspace -- as fast as the flush goes (no rate limit: the worst case for
the worker), while the e2e load runs at ``rate`` changes per second for the flush's duration and a little
before and after.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from slotguard.bench.e2e import E2EResult, Load, measure
from slotguard.operate.flush import Flush

#: The company whose keys are flushed: nobody books for it.
FLUSHED_COMPANY = "990001"
#: Seconds of e2e load before the flush starts.
LEAD_S = 3.0


def fill(redis_url: str, keys: int, template: Any, prefix: str) -> None:
    """Cache ``keys`` keys of :data:`FLUSHED_COMPANY` (10,000 per pipeline round trip)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for start in range(0, keys, 10_000):
            with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 10_000, keys)):
                    branch, hour = divmod(i, 50_000)
                    key = template.render(FLUSHED_COMPANY, str(branch), "1", [1_900_000_000 + hour * 3600])[0]
                    pipe.set(prefix + key, b"[]")
                pipe.execute()
    finally:
        client.close()


def commands_processed(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def run(
    redis_url: str,
    load: Callable[[], Load],
    template: Any,
    prefix: str,
    keys: int,
    rate: float,
    chunk: int,
    progress: Callable[[str], None],
) -> tuple[dict[str, Any], E2EResult]:
    """Fill, then flush under e2e load; the flush's figures and the load's result."""
    import redis.asyncio as aioredis

    progress(f"flush: caching {keys:,} keys")
    fill(redis_url, keys, template, prefix)
    pattern = prefix + template.pattern(FLUSHED_COMPANY)
    done: dict[str, Any] = {}

    def flush() -> None:
        async def go() -> None:
            await asyncio.sleep(LEAD_S)
            client = aioredis.Redis.from_url(redis_url)
            try:
                before = commands_processed(redis_url)
                started = time.monotonic()
                result = await Flush(
                    client, patterns=[pattern], key_prefix=prefix, rate=1e12, chunk=chunk
                ).run()
                seconds = time.monotonic() - started
                commands = commands_processed(redis_url) - before
            finally:
                await client.aclose()
            done.update(
                keys=result.deleted,
                seconds=round(seconds, 2),
                keys_per_s=round(result.deleted / seconds),
                redis_commands_per_s=round(commands / seconds),
                chunk=chunk,
            )

        asyncio.run(go())

    # The load's length: the lead, the flush (about 1 s per 100,000 keys here), and a tail.
    length = LEAD_S + keys / 100_000 + 3.0
    thread = threading.Thread(target=flush, name="flush")
    thread.start()
    progress(f"flush: deleting them while the pipeline takes {rate:g} changes/s")
    result = asyncio.run(measure(load(), rate, length))
    thread.join()
    if not done:
        raise RuntimeError("the flush did not finish")
    done["load_s"] = round(length, 1)
    return done, result
