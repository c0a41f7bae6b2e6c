"""The keyspace guard: deletes a cache write that may come from a reader who missed before the invalidation.

The stale-fill race: a reader misses, reads "free" from the database, the booking commits, the worker deletes
the keys -- and *then* the slow reader writes its stale answer. Only readers that were already filling when
the delete happened can do that. The guard follows, in the order Redis executed them:

* ``keymiss`` keyspace events of the cache prefix: a reader starts filling a key (one pending fill more);
* the worker's **announcements** on the channel ``<prefix>slotguard:invalidated``: each invalidation
  publishes its keys (one JSON array per chunk) from the same Lua script that UNLINKs them, so the message
  sits exactly where the delete does among the keyspace events; the fills pending then are suspects;
* ``set`` keyspace events: a fill lands (one pending fill less). While suspects may still be out -- some
  reader that missed before the invalidation has not written yet, within ``SLOTGUARD_GUARD_WINDOW`` -- the
  write is deleted again. Once every pending fill has landed, writes are left alone.

So a key nobody was filling at the invalidation costs nothing; when a reader was, the writes until it has
landed are deleted (a fresh one among them costs one extra miss). Bookkeeping is in :class:`FillTracker`,
pure and unit-tested. Every worker's guard hears every worker's announcements, so one guard is enough.
(A first version wrote a marker key per invalidated key and followed their ``set`` events: its own markers
cost the worker 40 % of its throughput; one message per chunk costs next to nothing.)

Pub/sub delivers at most once: while the guard is not subscribed (start, reconnect) it sees neither misses
nor announcements, so the second delete (``SLOTGUARD_SECOND_DELETE_AFTER``) runs for invalidations it did
not cover -- and only for those. The server must publish keyspace events for strings and key misses
(``notify-keyspace-events`` with ``K``, ``$`` and ``m``; Redis >= 6): the guard adds missing flags with
``CONFIG SET``. Without ``m`` it cannot know who is filling and deletes every write in the window (a
higher miss cost); where the server refuses ``CONFIG`` (managed Redis) it says so once and subscribes
anyway -- set the flags in the server's parameter group, or rely on the second delete alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from processor.core.keys import glob_escape
from processor.worker.cluster import ClusterNodes
from processor.worker.leases import LEASE_SUFFIX
from processor.worker.metrics import WorkerMetrics
from processor.worker.policy import Backoff

log = logging.getLogger("slotguard.worker.guard")

NOTIFY = "notify-keyspace-events"
#: Keyspace channel (K), string commands (``$``: ``set``), key misses (m).
NEEDED_FLAGS = "K$m"


def missing_flags(flags: str) -> str:
    """What ``notify-keyspace-events`` = ``flags`` lacks for the guard (``A`` covers ``$`` but not ``m``)."""
    have = set(flags)
    if "A" in have:
        have.add("$")
    return "".join(flag for flag in NEEDED_FLAGS if flag not in have)


@dataclass(slots=True)
class _Watch:
    suspects: int  # fills that may have started before the invalidation and not landed yet
    until: float


class FillTracker:
    """Who is filling which key, and which writes may be stale (see the module docstring).

    ``precise`` is False when key misses are not published: then every write within ``window`` of an
    invalidation is a suspect. State is bounded: pending counts and watches older than ``forget_after``
    are dropped.
    """

    def __init__(
        self,
        window: float,
        *,
        precise: bool = True,
        forget_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.precise = precise
        self._forget_after = forget_after
        self._clock = clock
        self._pending: dict[str, tuple[int, float]] = {}
        self._watches: dict[str, _Watch] = {}

    def missed(self, key: str) -> None:
        count, _ = self._pending.get(key, (0, 0.0))
        self._pending[key] = (count + 1, self._clock())
        watch = self._watches.get(key)
        if watch is not None:
            watch.suspects += 1  # a fresh reader; until it lands its write cannot be told from an old one

    def invalidated(self, key: str) -> None:
        """The key was deleted (announced in Redis' order among the misses and writes)."""
        now = self._clock()
        if not self.precise:
            self._watches[key] = _Watch(suspects=1, until=now + self.window)
            return
        count, _ = self._pending.get(key, (0, 0.0))
        if count > 0:
            self._watches[key] = _Watch(suspects=count, until=now + self.window)
        else:
            self._watches.pop(key, None)  # nobody was filling: no write that follows can be stale

    def invalidated_many(self, keys: Iterable[str]) -> None:
        """:meth:`invalidated` for each of ``keys``, in one pass: an announcement carries a whole batch's
        keys, and only those with a fill in flight or a watch need any work -- set operations find them."""
        now = self._clock()
        watches = self._watches
        if not self.precise:
            until = now + self.window
            for key in keys:
                watches[key] = _Watch(suspects=1, until=until)
            return
        announced = keys if isinstance(keys, (set, frozenset)) else set(keys)
        pending = self._pending
        filling = {k for k in announced & pending.keys() if pending[k][0] > 0} if pending else set()
        for key in filling:
            watches[key] = _Watch(suspects=pending[key][0], until=now + self.window)
        if watches:
            for key in (announced & watches.keys()) - filling:
                del watches[key]  # nobody was filling: no write that follows can be stale

    @property
    def idle(self) -> bool:
        """Nobody is filling and nothing is watched (precise mode): an invalidation changes nothing."""
        return self.precise and not self._pending and not self._watches

    def written(self, key: str) -> bool:
        """A write of ``key`` landed; True when it must be deleted again."""
        now = self._clock()
        count, _ = self._pending.get(key, (0, 0.0))
        if count <= 1:
            self._pending.pop(key, None)
        else:
            self._pending[key] = (count - 1, now)
        watch = self._watches.get(key)
        if watch is None:
            return False
        if now >= watch.until:
            del self._watches[key]
            return False
        if not self.precise:
            return True
        watch.suspects -= 1
        if watch.suspects <= 0:
            del self._watches[key]  # every fill out at the invalidation has landed: this was the last
        return True

    def prune(self) -> None:
        """Forget readers that never wrote (crashed, timed out) and expired watches."""
        now = self._clock()
        stale = now - self._forget_after
        for key in [k for k, (_, seen) in self._pending.items() if seen < stale]:
            del self._pending[key]
        for key in [k for k, w in self._watches.items() if now >= w.until]:
            del self._watches[key]

    def __len__(self) -> int:
        return len(self._pending) + len(self._watches)


class KeyspaceGuard:
    """Subscribes to the cache prefix's keyspace events and deletes suspect writes (module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        channel: str,
        window: float,
        metrics: WorkerMetrics,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._backoff = backoff or Backoff(maximum=5.0)
        self._clock = clock
        self.channel = channel
        self.tracker = FillTracker(window)
        db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
        self.channel_prefix = f"__keyspace@{db}__:"
        self.pattern = self.channel_prefix + glob_escape(prefix) + "*"
        #: Wall-clock time since which the guard has watched without a gap (None: not watching). The second
        #: delete skips invalidations made while the guard was watching (and saw the misses before them).
        self.covering_since: float | None = None
        self._attempt = 0

    async def ensure_notifications(self) -> tuple[bool, bool]:
        """(verified, misses): whether the server is known to publish the events, and key misses too."""
        try:
            current = str((await self._client.config_get(NOTIFY)).get(NOTIFY, ""))
            missing = missing_flags(current)
            if missing:
                await self._client.config_set(NOTIFY, current + missing)
                log.info("enabled Redis keyspace events %s (for the keyspace guard)", missing)
        except ResponseError as exc:
            # Managed Redis renames or forbids CONFIG: the events may still be on (parameter group).
            log.warning(
                "cannot check or set notify-keyspace-events (%s); the guard subscribes anyway, treating every "
                "write after an invalidation as suspect -- make the server publish K$m, or rely on the "
                "second delete alone",
                str(exc).splitlines()[0],
            )
            return False, False
        return True, True

    async def delete(self, key: str) -> bool:
        """Delete a suspect write; True when the key still existed."""
        deleted = int(await self._client.unlink(key)) > 0
        if deleted:
            self._metrics.guard_deletes.inc()
        return deleted

    async def handle(self, key: str, event: bytes) -> None:
        """One keyspace event of ``key``."""
        if key.endswith(LEASE_SUFFIX):
            return
        if event == b"keymiss":
            self.tracker.missed(key)
        elif event == b"set" and self.tracker.written(key):
            await self.delete(key)

    def announced(self, payload: bytes) -> None:
        """An invalidation's keys, announced on the channel."""
        if self.tracker.idle:
            # The common case while nobody reads the cache, e.g. a worker catching up on a backlog: the
            # announcements of every batch (tens of thousands of keys a second) need not even be parsed.
            return
        try:
            keys = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("ignored a malformed announcement on %s", self.channel)
            return
        if isinstance(keys, list):
            try:
                announced = set(keys)
            except TypeError:  # not our script's output: keep what can be a key
                announced = {str(k) for k in keys if isinstance(k, (str, int, float))}
            self.tracker.invalidated_many(announced)

    async def run(self) -> None:
        """Subscribe and guard until cancelled; reconnects with backoff when Redis goes away."""
        while True:
            try:
                verified, misses = await self.ensure_notifications()
                self.tracker.precise = misses
                self._metrics.guard_active.set(1 if verified else 0)
                await self._listen(covering=verified)
            except NoPermissionError as exc:
                # An ACL user without rights to the channels (Redis 7 grants none by default): nothing to
                # retry. The second delete covers every invalidation from here on.
                self._metrics.guard_active.set(0)
                log.warning(
                    "keyspace guard off: the Redis user may not subscribe (%s) -- grant it the channels "
                    "%s and %s (ACL &...), then restart the worker; the second delete covers the race meanwhile",
                    str(exc).splitlines()[0],
                    self.pattern,
                    self.channel,
                )
                return
            except (RedisError, OSError) as exc:
                self._metrics.guard_active.set(0)
                self._attempt += 1
                delay = self._backoff.delay(self._attempt)
                log.warning(
                    "keyspace guard lost Redis (%s: %s); resubscribing in %.1f s -- the second delete covers "
                    "the gap",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    delay,
                )
                await asyncio.sleep(delay)  # backoff before reconnecting, not a wait for the pipeline

    async def _listen(self, *, covering: bool) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            # One connection for both: Redis delivers its messages in the order it generated them.
            await pubsub.psubscribe(self.pattern)
            await pubsub.subscribe(self.channel)
            if covering:
                self.covering_since = self._clock()
            self._attempt = 0
            skip = len(self.channel_prefix)
            pruned = time.monotonic()
            async for message in pubsub.listen():  # a broken connection raises here, and run() reconnects
                kind, data = message["type"], message["data"]
                payload = data if isinstance(data, bytes) else str(data).encode()
                if kind == "message":  # an announcement
                    self.announced(payload)
                    continue
                if kind != "pmessage":
                    continue
                channel = message["channel"]
                key = (channel.decode() if isinstance(channel, bytes) else str(channel))[skip:]
                await self.handle(key, payload)
                if time.monotonic() - pruned > 5.0:
                    self.tracker.prune()
                    pruned = time.monotonic()
        finally:
            self.covering_since = None
            await pubsub.aclose()


class ClusterGuard:
    """The guard on a Redis Cluster: keyspace events are per node, so one :class:`KeyspaceGuard` per primary,
    each on a connection of its own to that node, started and stopped as the primaries change (a failover,
    a node added). An announcement is published on the node that holds its keys and, in a cluster, reaches
    every node's subscribers: each guard hears all of them, and the ones for its own node's keys in Redis'
    order among that node's keyspace events."""

    def __init__(
        self,
        nodes: ClusterNodes,
        *,
        prefix: str,
        channel: str,
        window: float,
        metrics: WorkerMetrics,
        follow_every: float = 5.0,
    ) -> None:
        self._nodes = nodes
        self._options = {"prefix": prefix, "channel": channel, "window": window, "metrics": metrics}
        self._follow_every = follow_every
        self.guards: dict[str, KeyspaceGuard] = {}

    @property
    def covering_since(self) -> float | None:
        """Since when every primary's guard has watched without a gap (None: one is not watching)."""
        since = [g.covering_since for g in self.guards.values()]
        if not since or any(s is None for s in since):
            return None
        return max(s for s in since if s is not None)

    async def run(self) -> None:
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    await self._nodes.refresh()
                    primaries = set(self._nodes.primaries())
                except (RedisError, OSError) as exc:
                    log.warning(
                        "keyspace guard cannot read the cluster's slot map (%s); keeps what it has", exc
                    )
                    primaries = set(tasks)
                for name in set(tasks) - primaries:
                    tasks.pop(name).cancel()
                    self.guards.pop(name, None)
                    log.info("keyspace guard: %s is no longer a primary", name)
                for name in primaries - set(tasks):
                    guard = KeyspaceGuard(self._nodes.client(name, socket_timeout=None), **self._options)  # type: ignore[arg-type]
                    self.guards[name] = guard
                    tasks[name] = asyncio.create_task(guard.run(), name=f"guard {name}")
                    log.info("keyspace guard: watching primary %s", name)
                await asyncio.sleep(self._follow_every)  # CLUSTER SLOTS has no change event to wait on
        finally:
            for task in tasks.values():
                task.cancel()
