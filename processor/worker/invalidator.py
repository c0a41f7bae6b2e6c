"""Deleting cache keys in Redis: one pipelined ``UNLINK`` per batch.

:meth:`RedisInvalidator.unlink` is one attempt; it wraps every redis-py error into
:class:`~processor.worker.errors.RedisUnavailable`. Retrying belongs to the failure policy
(:mod:`processor.worker.policy`): the batch handler retries until Redis acknowledges, so nothing is
committed behind keys that were not deleted. ``UNLINK`` is idempotent, so redoing a batch is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.worker.errors import RedisUnavailable
from processor.worker.leases import LEASE_SUFFIX
from processor.worker.metrics import WorkerMetrics
from schemas.redact import redact_url

log = logging.getLogger("slotguard.worker.redis")

#: Keys per UNLINK command; a batch larger than this becomes several commands in one pipeline.
UNLINK_CHUNK = 1000
#: The invalidation marker of ``key`` lives under ``key`` + this suffix (see :mod:`processor.worker.guard`).
MARKER_SUFFIX = ":slotguard-marker"


def redis_client(
    url: str, *, ca_file: str | None = None, socket_timeout: float | None = 5.0
) -> aioredis.Redis:
    """A client for ``url`` (``redis://`` or ``rediss://`` for TLS; user and password from the URL).

    Short timeouts: a hung Redis must surface as an error the policy retries, not as a stuck batch.
    """
    options: dict[str, object] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 10,
    }
    if ca_file and url.startswith("rediss://"):
        options["ssl_ca_certs"] = ca_file
    return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]


#: Due members of the schedule: UNLINK those due before ARGV[3] (the others were watched by the keyspace
#: guard) and remove them all, atomically; returns how many unlinked keys existed.
_DRAIN_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
if #due == 0 then return 0 end
local all, unlink = {}, {}
for i = 1, #due, 2 do
  all[#all + 1] = due[i]
  if tonumber(due[i + 1]) < tonumber(ARGV[3]) then unlink[#unlink + 1] = due[i] end
end
local found = 0
if #unlink > 0 then found = redis.call('UNLINK', unpack(unlink)) end
redis.call('ZREM', KEYS[1], unpack(all))
return found
"""


class RedisInvalidator:
    """Unlinks keys in the Redis named by a URL; wraps redis-py errors into :class:`RedisUnavailable`."""

    def __init__(
        self,
        url: str,
        *,
        metrics: WorkerMetrics,
        client: aioredis.Redis | None = None,
        ca_file: str | None = None,
        second_delete_after: float = 0.0,
        schedule_key: str = "slotguard:second-delete",
        marker_ttl: float = 0.0,
        revoke_leases: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url_for_humans = redact_url(url)
        self._client = client or redis_client(url, ca_file=ca_file)
        self._metrics = metrics
        #: Seconds after which every unlinked key is unlinked once more (0: off) -- a stale fill that landed
        #: after the first delete is gone then. The schedule is a sorted set in Redis itself (member = key,
        #: score = when), written in the same round trip as the UNLINK, so a worker crash cannot drop it.
        self._second_delete_after = second_delete_after
        self.schedule_key = schedule_key
        #: Seconds an invalidation marker lives (0: no markers); the keyspace guard deletes a cache write
        #: that lands while the key's marker is live.
        self._marker_ms = int(marker_ttl * 1000)
        #: Revoke the reader leases (:mod:`processor.worker.leases`) in the same UNLINK command as the keys,
        #: so a leased fill can never land between the two.
        self._revoke_leases = revoke_leases
        self._clock = clock
        self._drain: Any = None

    async def unlink(self, keys: Sequence[str]) -> int:
        """One attempt: UNLINK every key in one pipeline round trip; the number of keys that existed
        (leases revoked with them included)."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                starts = range(0, len(keys), UNLINK_CHUNK)
                if self._marker_ms > 0:
                    # Before the UNLINK (a pipeline runs in order): a fill that lands right after the delete
                    # must already find the marker.
                    for key in keys:
                        pipe.set(key + MARKER_SUFFIX, b"1", px=self._marker_ms)
                first = len(keys) if self._marker_ms > 0 else 0  # results of the marker SETs come first
                for start in starts:
                    chunk = keys[start : start + UNLINK_CHUNK]
                    if self._revoke_leases:
                        pipe.unlink(*chunk, *(key + LEASE_SUFFIX for key in chunk))
                    else:
                        pipe.unlink(*chunk)
                if self._second_delete_after > 0:
                    # Same round trip: the schedule is written exactly when the first delete is.
                    due = self._clock() + self._second_delete_after
                    for start in starts:
                        pipe.zadd(self.schedule_key, dict.fromkeys(keys[start : start + UNLINK_CHUNK], due))
                results = (await pipe.execute())[first : first + len(starts)]
        except (RedisError, OSError) as exc:
            self._metrics.redis_up.set(0)
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._metrics.redis_up.set(1)
        return sum(int(n) for n in results)

    async def second_delete_due(self, limit: int = 1000, *, watched_since: float | None = None) -> int:
        """One attempt: UNLINK the keys whose second delete is due and drop them from the schedule; the
        number of keys that existed again (stale fills caught).

        ``watched_since``: wall-clock time since which the keyspace guard has watched without a gap. Keys
        first deleted after it plus the marker's life (so the guard also saw the misses before the delete)
        are only dropped from the schedule: the guard already removed any stale write."""
        if self._drain is None:
            self._drain = self._client.register_script(_DRAIN_DUE)
        if watched_since is None:
            unlink_before = "1e300"  # every due key is unlinked
        else:
            unlink_before = repr(watched_since + self._marker_ms / 1000 + self._second_delete_after)
        try:
            found = int(
                await self._drain(keys=[self.schedule_key], args=[self._clock(), limit, unlink_before])
            )
        except (RedisError, OSError) as exc:
            self._metrics.redis_up.set(0)
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return found

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
