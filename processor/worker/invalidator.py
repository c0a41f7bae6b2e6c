"""Deleting cache keys in Redis: one pipelined ``UNLINK`` per batch.

:meth:`RedisInvalidator.unlink` is one attempt; it wraps every redis-py error into
:class:`~processor.worker.errors.RedisUnavailable`. Retrying belongs to the failure policy
(:mod:`processor.worker.policy`): the batch handler retries until Redis acknowledges, so nothing is
committed behind keys that were not deleted. ``UNLINK`` is idempotent, so redoing a batch is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.worker.errors import RedisUnavailable
from processor.worker.metrics import WorkerMetrics
from schemas.redact import redact_url

log = logging.getLogger("slotguard.worker.redis")

#: Keys per UNLINK command; a batch larger than this becomes several commands in one pipeline.
UNLINK_CHUNK = 1000


def redis_client(url: str, *, ca_file: str | None = None) -> aioredis.Redis:
    """A client for ``url`` (``redis://`` or ``rediss://`` for TLS; user and password from the URL).

    Short timeouts: a hung Redis must surface as an error the policy retries, not as a stuck batch.
    """
    options: dict[str, object] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": 5.0,
        "health_check_interval": 10,
    }
    if ca_file and url.startswith("rediss://"):
        options["ssl_ca_certs"] = ca_file
    return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]


class RedisInvalidator:
    """Unlinks keys in the Redis named by a URL; wraps redis-py errors into :class:`RedisUnavailable`."""

    def __init__(
        self,
        url: str,
        *,
        metrics: WorkerMetrics,
        client: aioredis.Redis | None = None,
        ca_file: str | None = None,
    ) -> None:
        self._url_for_humans = redact_url(url)
        self._client = client or redis_client(url, ca_file=ca_file)
        self._metrics = metrics

    async def unlink(self, keys: Sequence[str]) -> int:
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
