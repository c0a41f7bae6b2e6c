"""Deleting cache keys in Redis: one pipelined ``UNLINK`` per batch, retried until Redis takes it.

The worker acknowledges (and so lets Faust commit) a change only after :meth:`RedisInvalidator.unlink`
returned, so this method never gives up: while Redis is down it retries with capped exponential backoff
and the batch -- and every offset behind it -- stays uncommitted. It returns only on success or when the
task is cancelled (worker shutdown), in which case nothing is acknowledged and the next owner of the
partition redoes the batch. ``UNLINK`` is idempotent, so redoing is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.worker.errors import RedisUnavailable
from processor.worker.metrics import WorkerMetrics
from slotguard.settings import redact_url

log = logging.getLogger("slotguard.worker.redis")

#: Keys per UNLINK command; a batch larger than this becomes several commands in one pipeline.
UNLINK_CHUNK = 1000

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: ``initial * factor**attempt``, at most ``maximum`` seconds."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        # Clamp the exponent so long outages do not overflow the float.
        return float(min(self.maximum, self.initial * self.factor ** min(attempt, 64)))


class RedisInvalidator:
    """Unlinks keys in the Redis named by a URL; wraps redis-py errors into :class:`RedisUnavailable`."""

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff,
        metrics: WorkerMetrics,
        client: aioredis.Redis | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._url_for_humans = redact_url(url)
        # Short timeouts: a hung Redis must surface as an error we retry, not as a stuck batch.
        self._client = client or aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=10
        )
        self._backoff = backoff
        self._metrics = metrics
        self._sleep = sleep

    async def unlink_once(self, keys: Sequence[str]) -> int:
        """One attempt: UNLINK every key in one pipeline round trip; the number of keys that existed."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(keys), UNLINK_CHUNK):
                    pipe.unlink(*keys[start : start + UNLINK_CHUNK])
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._metrics.redis_up.set(0)
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._metrics.redis_up.set(1)
        return sum(int(n) for n in results)

    async def unlink(self, keys: Sequence[str]) -> int:
        """UNLINK ``keys``, retrying with backoff until Redis acknowledges; the number deleted."""
        if not keys:
            return 0
        attempt = 0
        while True:
            try:
                return await self.unlink_once(keys)
            except RedisUnavailable as exc:
                delay = self._backoff.delay(attempt)
                attempt += 1
                self._metrics.redis_retries.inc()
                log.warning(
                    "cache invalidation failed, retrying",
                    extra={
                        "error": str(exc),
                        "attempt": attempt,
                        "retry_in_s": round(delay, 3),
                        "total_keys": len(keys),
                    },
                )
                await self._sleep(delay)

    async def ping(self) -> bool:
        """True when Redis answers PING (for /healthz)."""
        try:
            ok = bool(await self._client.ping())
        except (RedisError, OSError):
            self._metrics.redis_up.set(0)
            return False
        self._metrics.redis_up.set(1 if ok else 0)
        return ok

    async def close(self) -> None:
        await self._client.aclose()
