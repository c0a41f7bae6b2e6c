"""Deleting cache keys in Redis: one pipelined ``UNLINK`` per batch.

:meth:`RedisInvalidator.unlink` is one attempt; it wraps every redis-py error into
:class:`~processor.worker.errors.RedisUnavailable`. Retrying belongs to the failure policy
(:mod:`processor.worker.policy`): the batch handler retries until Redis acknowledges, so nothing is
committed behind keys that were not deleted. ``UNLINK`` is idempotent, so redoing a batch is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from processor.core.keys import glob_escape
from processor.worker.cluster import ClusterNodes
from processor.worker.errors import RedisUnavailable
from processor.worker.leases import LEASE_SUFFIX
from processor.worker.metrics import WorkerMetrics
from processor.worker.redis_connect import redis_client
from schemas.connections import RedisConnection
from schemas.redact import redact_url

log = logging.getLogger("slotguard.worker.redis")

#: Keys per UNLINK command; a batch larger than this becomes several commands in one pipeline.
UNLINK_CHUNK = 1000
#: Sorted set (after the key prefix) of the chunks whose second delete is due, scored by when.
SCHEDULE_KEY = "slotguard:second-delete"
#: Pub/sub channel (after the key prefix) on which each invalidation announces its keys to the keyspace guard.
INVALIDATIONS_CHANNEL = "slotguard:invalidated"


#: One chunk of an invalidation: announce the chunk on channel ARGV[1] ('' = no guard) -- ARGV[4], the JSON array
#: of its cache keys (KEYS[2..]), in Redis' own order among the keyspace events the guard follows --, UNLINK the
#: keys, then their leases (each key with the ARGV[2] suffix; '' = none), and schedule the chunk's second delete
#: in KEYS[1] (due ARGV[3]; '' = none) as one member, ARGV[5]: the JSON array [due, key, ...]. Atomic: no
#: reader's command lands in between. One UNLINK per kind and one ZADD per chunk: a command per key cost ten
#: times the deletes. Both JSON arrays come encoded from the worker (orjson, ~7 µs per 1,000 keys): built in
#: Lua, with cjson and a table per chunk, a 1,000-key chunk cost Redis 778-815 µs, now 537-577 (INFO
#: commandstats, three runs each, Redis 7.0 on the 2-core dev machine) -- CPU the worker shares there.
_INVALIDATE = """
if ARGV[1] ~= '' then
  -- pcall: a Redis user without channel rights must not lose the invalidation (the guard is off then).
  redis.pcall('PUBLISH', ARGV[1], ARGV[4])
end
local found = redis.call('UNLINK', unpack(KEYS, 2))
if ARGV[2] ~= '' then
  local leases, suffix = {}, ARGV[2]
  for i = 2, #KEYS do leases[i - 1] = KEYS[i] .. suffix end
  found = found + redis.call('UNLINK', unpack(leases))
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[5])
end
return found
"""

#: Due chunks of the schedule (at most ARGV[2]): UNLINK the keys of those due before ARGV[3] (the others
#: were watched by the keyspace guard) and remove them all, atomically; returns {keys that existed, chunks
#: removed}. A member that is not a JSON array is one key (the one-key-per-member schedule earlier versions wrote).
_DRAIN_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
if #due == 0 then return {0, 0} end
local all, found = {}, 0
for i = 1, #due, 2 do
  local member = due[i]
  all[#all + 1] = member
  if tonumber(due[i + 1]) < tonumber(ARGV[3]) then
    if string.sub(member, 1, 1) == '[' then
      local chunk = cjson.decode(member)  -- [due, key, ...]
      if #chunk > 1 then found = found + redis.call('UNLINK', unpack(chunk, 2)) end
    else
      found = found + redis.call('UNLINK', member)
    end
  end
end
redis.call('ZREM', KEYS[1], unpack(all))
return {found, #all}
"""


#: A batch's share on one node of a Redis Cluster (:mod:`processor.worker.cluster`): what ``_INVALIDATE``
#: does for one slot, for keys of every slot the node serves -- undeclared keys, which Redis >= 7 allows a
#: script flagged ``allow-cross-slot-keys`` as long as they are local. ARGV: channel ('' = none), due
#: ('' = none), the announcement, the schedule member, the node's schedule key, then the keys (and leases).
_INVALIDATE_ON_NODE = """#!lua flags=allow-cross-slot-keys
if ARGV[1] ~= '' then
  redis.pcall('PUBLISH', ARGV[1], ARGV[3])
end
local found = 0
for i = 6, #ARGV do
  found = found + redis.call('UNLINK', ARGV[i])
end
if ARGV[2] ~= '' then
  redis.call('ZADD', ARGV[5], ARGV[2], ARGV[4])
end
return found
"""

#: Seconds /healthz waits for Redis' PONG.
PING_TIMEOUT_S = 1.0

#: Seconds between two looks for second-delete schedules a resharding or failover left on another node.
ORPHAN_SCAN_EVERY_S = 10.0


class RedisInvalidator:
    """Unlinks keys in the Redis named by a URL; wraps redis-py errors into :class:`RedisUnavailable`."""

    def __init__(
        self,
        redis: RedisConnection,
        *,
        metrics: WorkerMetrics,
        client: aioredis.Redis | None = None,
        wait_replicas: int,
        wait_timeout: float,
        second_delete_after: float,
        key_prefix: str,
        guard_window: float,
        revoke_leases: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url_for_humans = redact_url(redis.url)
        #: Shared with the crash journal (processor/worker/crashloop.py).
        self.client = client or redis_client(redis)
        #: Replicas that must hold a batch's deletes before :meth:`unlink` returns (Redis' WAIT, on the
        #: connection that sent them): asynchronous replication otherwise loses acknowledged deletes when the
        #: primary dies and its replica is promoted -- after the worker committed the offset.
        self._wait_replicas = wait_replicas
        self._wait_ms = int(wait_timeout * 1000)
        self._metrics = metrics
        #: Seconds after which every unlinked key is unlinked once more (0: off) -- a stale fill that landed
        #: after the first delete is gone then. The schedule is a sorted set in Redis itself (member = a chunk's
        #: keys, score = when), written in the same round trip as the UNLINK, so a worker crash cannot drop it.
        self._second_delete_after = second_delete_after
        #: Both live under the cache's key prefix, inside the ACL pattern of the cache's Redis user.
        self.schedule_key = key_prefix + SCHEDULE_KEY
        #: Seconds the keyspace guard watches a key after its invalidation (0: no guard). With a guard, every
        #: invalidation announces its keys on ``channel`` (:mod:`processor.worker.guard`).
        self.guard_window = guard_window
        self.channel = key_prefix + INVALIDATIONS_CHANNEL
        self._announce = guard_window > 0
        #: Revoke the reader leases (:mod:`processor.worker.leases`) in the same UNLINK command as the keys,
        #: so a leased fill can never land between the two.
        self._revoke_leases = revoke_leases
        self._clock = clock
        self._drain: Any = None
        #: On a cluster: its primaries, each with its share of a batch (None: one server or a Sentinel's).
        self._nodes = (
            ClusterNodes(cast(RedisCluster, self.client), redis) if redis.kind == "cluster" else None
        )
        self._refresh = False
        self._orphans_at = 0.0

    async def unlink(self, keys: Sequence[str]) -> int:
        """One attempt: UNLINK every key in one pipeline round trip; the number of keys that existed
        (leases revoked with them included)."""
        if self._nodes is not None:
            return await self._unlink_on_nodes(keys)
        starts = range(0, len(keys), UNLINK_CHUNK)
        extras = self._announce or self._revoke_leases or self._second_delete_after > 0
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                if extras:
                    # One script call per chunk announces, unlinks (leases in the same step) and schedules:
                    # a Python-side command per key would cost more than the deletes.
                    due = (
                        repr(self._clock() + self._second_delete_after)
                        if self._second_delete_after > 0
                        else ""
                    )
                    channel = self.channel if self._announce else ""
                    suffix = LEASE_SUFFIX if self._revoke_leases else ""
                    head = b"[" + due.encode() + b","
                    for start in starts:
                        chunk = keys[start : start + UNLINK_CHUNK]
                        announced = orjson.dumps(chunk) if channel or due else b""
                        # [due, key, ...]: the keys' array with the due time in front.
                        member = head + announced[1:] if due else b""
                        # EVAL, not a registered script: redis-py checks a pipeline's registered scripts
                        # with a SCRIPT EXISTS round trip before every execute. Redis caches the compiled
                        # script by its hash either way.
                        pipe.eval(
                            _INVALIDATE, len(chunk) + 1, self.schedule_key, *chunk,
                            channel, suffix, due, announced, member,
                        )  # fmt: skip
                else:
                    for start in starts:
                        pipe.unlink(*keys[start : start + UNLINK_CHUNK])
                if self._wait_replicas:
                    pipe.execute_command("WAIT", self._wait_replicas, self._wait_ms)
                results = await pipe.execute()
                if self._wait_replicas:
                    await self._replicated(self.client, int(results.pop()))
        except (RedisError, OSError) as exc:
            self._metrics.redis_up.set(0)
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._metrics.redis_up.set(1)
        return sum(int(n) for n in results)

    async def _unlink_on_nodes(self, keys: Sequence[str]) -> int:
        """:meth:`unlink` on a cluster: each primary's keys (and leases) in one round trip of its own, all
        primaries at once; done when every one acknowledged (and its replicas, with WAIT)."""
        assert self._nodes is not None
        try:
            if self._refresh:
                await self._nodes.refresh()
                self._refresh = False
            else:
                await self._nodes.ensure()
            groups = self._nodes.group(keys)
            leases = self._nodes.group(k + LEASE_SUFFIX for k in keys) if self._revoke_leases else {}
            due = repr(self._clock() + self._second_delete_after) if self._second_delete_after > 0 else ""
            counts = await asyncio.gather(
                *(
                    self._on_node(name, groups.get(name, []), leases.get(name, []), due)
                    for name in set(groups) | set(leases)
                )
            )
        except (RedisError, OSError, LookupError) as exc:
            raise self._cluster_failed(exc) from exc
        self._metrics.redis_up.set(1)
        return sum(counts)

    async def _on_node(self, name: str, keys: list[str], leases: list[str], due: str) -> int:
        assert self._nodes is not None
        client = self._nodes.client(name)
        channel = self.channel if self._announce else ""
        schedule = f"{self.schedule_key}:{self._nodes.tag(name)}" if due else ""
        head = b"[" + due.encode() + b","
        async with client.pipeline(transaction=False) as pipe:
            for start in range(0, len(keys), UNLINK_CHUNK):
                chunk = keys[start : start + UNLINK_CHUNK]
                announced = orjson.dumps(chunk) if channel or due else b""
                member = head + announced[1:] if due else b""
                pipe.eval(_INVALIDATE_ON_NODE, 0, channel, due, announced, member, schedule, *chunk)
            for start in range(0, len(leases), UNLINK_CHUNK):
                pipe.eval(_INVALIDATE_ON_NODE, 0, "", "", b"", b"", "", *leases[start : start + UNLINK_CHUNK])
            if self._wait_replicas:
                pipe.execute_command("WAIT", self._wait_replicas, self._wait_ms)
            results = await pipe.execute()
        if self._wait_replicas:
            await self._replicated(client, int(results.pop()))
        return sum(int(n) for n in results)

    async def _replicated(self, client: Any, acknowledged: int) -> None:
        """Raise unless ``acknowledged`` replicas are enough: the number asked for, or every replica the
        primary has connected now -- with none, no failover can promote one that lacks the deletes."""
        if acknowledged >= self._wait_replicas:
            return
        info = await client.info("replication")
        connected = int(info.get("connected_slaves", 0))
        if acknowledged < min(self._wait_replicas, connected):
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans}: {acknowledged} of {min(self._wait_replicas, connected)} "
                f"replica(s) acknowledged the deletes within {self._wait_ms} ms (WAIT)"
            )

    async def second_delete_due(self, limit: int = 8, *, watched_since: float | None = None) -> int:
        """One attempt: UNLINK the keys whose second delete is due and drop them from the schedule -- all of
        them, ``limit`` chunks per round trip --; the number of keys that existed again (stale fills caught).

        ``watched_since``: wall-clock time since which the keyspace guard has watched without a gap. Keys
        first deleted after it plus ``guard_window`` (so the guard also saw the misses before the delete)
        are only dropped from the schedule: the guard already removed any stale write."""
        if watched_since is None:
            unlink_before = "1e300"  # every due key is unlinked
        else:
            unlink_before = repr(watched_since + self.guard_window + self._second_delete_after)
        now = self._clock()
        if self._nodes is not None:
            return await self._second_delete_on_nodes(limit, now, float(unlink_before))
        if self._drain is None:
            self._drain = self.client.register_script(_DRAIN_DUE)
        found = 0
        try:
            while True:
                existed, removed = await self._drain(
                    keys=[self.schedule_key], args=[now, limit, unlink_before]
                )
                found += int(existed)
                if int(removed) < limit:
                    return found
        except (RedisError, OSError) as exc:
            self._metrics.redis_up.set(0)
            raise RedisUnavailable(
                f"Redis at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def _second_delete_on_nodes(self, limit: int, now: float, unlink_before: float) -> int:
        """:meth:`second_delete_due` on a cluster: each primary's schedule (and any a resharding or failover
        left on it) read, its due keys unlinked on the primaries that serve them now, and only then removed
        from the schedule: a crash in between unlinks them again, never not at all."""
        assert self._nodes is not None
        found = 0
        try:
            await self._nodes.ensure()
            scan = time.monotonic() >= self._orphans_at
            if scan:
                self._orphans_at = time.monotonic() + ORPHAN_SCAN_EVERY_S
            for name in self._nodes.primaries():
                node = self._nodes.client(name)
                schedules = {f"{self.schedule_key}:{self._nodes.tag(name)}"}
                if scan:
                    pattern = glob_escape(self.schedule_key) + ":*"
                    schedules |= {k.decode() async for k in node.scan_iter(match=pattern, count=1000)}
                for schedule in schedules:
                    while True:
                        due = await node.zrangebyscore(
                            schedule, "-inf", now, start=0, num=limit, withscores=True
                        )
                        if not due:
                            break
                        keys = [
                            k for member, score in due if score < unlink_before for k in _scheduled(member)
                        ]
                        for owner, owned in self._nodes.group(keys).items():
                            # Each key on the node that serves it now: one script call per node (a moved key
                            # fails it; the schedule is kept, the slot map read again, the next tick retries).
                            found += int(
                                await self._nodes.client(owner).eval(
                                    _INVALIDATE_ON_NODE, 0, "", "", b"", b"", "", *owned
                                )
                            )
                        await node.zrem(schedule, *(member for member, _ in due))
                        if len(due) < limit:
                            break
        except (RedisError, OSError, LookupError) as exc:
            raise self._cluster_failed(exc) from exc
        return found

    def _cluster_failed(self, exc: BaseException) -> RedisUnavailable:
        """A cluster call failed: maybe the slot map changed (resharding, failover), so it is read again
        before the retry."""
        self._refresh = True
        self._metrics.redis_up.set(0)
        return RedisUnavailable(
            f"Redis Cluster at {self._url_for_humans} failed: {type(exc).__name__}: {exc}"
        )

    async def ping(self) -> bool:
        """True when Redis answers PING within :data:`PING_TIMEOUT_S` (for /healthz) -- on a cluster, every
        primary. Bounded: a dead primary must make /healthz say 503, not leave it unanswered."""
        try:
            return await asyncio.wait_for(self._ping(), PING_TIMEOUT_S)
        except TimeoutError:
            self._metrics.redis_up.set(0)
            return False

    async def _ping(self) -> bool:
        try:
            if self._nodes is not None:
                if self._refresh:
                    await self._nodes.refresh()
                    self._refresh = False
                await self._nodes.ensure()
                pongs = await asyncio.gather(*(self._nodes.client(n).ping() for n in self._nodes.primaries()))
                ok = all(pongs)
            else:
                ok = bool(await self.client.ping())
        except (RedisError, OSError, LookupError):
            self._refresh = self._nodes is not None
            self._metrics.redis_up.set(0)
            return False
        self._metrics.redis_up.set(1 if ok else 0)
        return ok

    async def close(self) -> None:
        if self._nodes is not None:
            await self._nodes.aclose()
        else:
            await self.client.aclose()


def _scheduled(member: bytes) -> list[str]:
    """The keys of a second-delete schedule member: ``[due, key, ...]``."""
    try:
        chunk = orjson.loads(member)
    except orjson.JSONDecodeError:
        return [member.decode()]  # one key per member, as earlier versions wrote
    return [str(k) for k in chunk[1:]] if isinstance(chunk, list) else []
