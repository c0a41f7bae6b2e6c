"""Flush cached keys: ``SCAN`` + ``UNLINK`` in bounded chunks, at a rate limit, resumable after a kill.

What may be stale after a gap in the change stream cannot be known key by key, so it is deleted by
pattern (:meth:`~processor.core.keys.KeyTemplate.pattern`: every key of the template, of a company, or of
a branch). Never ``KEYS``: one ``SCAN`` step visits about ``chunk`` keys and its matches go in one
``UNLINK`` (freed off the main thread), so Redis serves readers and the worker between any two steps, and
the rate limit keeps the misses that follow from arriving at the database all at once.

Progress is checkpointed in a Redis hash (``<prefix>slotguard:flush:<job>``, the job named by its
patterns) after every step: a flush killed with ``kill -9`` and started again with the same scope goes on
from its last cursor. ``SCAN`` guarantees every key present for the whole scan is returned, so a resumed
flush misses none of them; a key written meanwhile is a fresh fill and need not be deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("slotguard.flush")

#: Seconds between two progress lines.
PROGRESS_EVERY_S = 5.0


@dataclass
class FlushProgress:
    pattern_index: int = 0
    #: Which node is being scanned (a cluster's primaries are scanned one after the other).
    node_index: int = 0
    cursor: int = 0
    scanned: int = 0
    deleted: int = 0
    resumed: bool = False
    seconds: float = 0.0


class FlushMetrics:
    """The flush's own registry (served by ``--metrics-port``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.deleted = Counter(
            "slotguard_flush_keys_deleted", "Cached keys the flush deleted.", registry=self.registry
        )
        self.scanned = Counter(
            "slotguard_flush_keys_scanned", "Keys the flush's SCAN returned.", registry=self.registry
        )
        self.running = Gauge("slotguard_flush_running", "1 while a flush runs.", registry=self.registry)


def _own(key: bytes | str, own: bytes) -> bool:
    return (key if isinstance(key, bytes) else key.encode()).startswith(own)


def job_name(patterns: Sequence[str]) -> str:
    """A flush's name: the same scope is the same job, so a second start resumes the first."""
    return hashlib.sha256("\n".join(patterns).encode()).hexdigest()[:16]


class Flush:
    """One flush job over ``patterns``; :meth:`count` for a dry run, :meth:`run` to delete."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        patterns: Sequence[str],
        key_prefix: str,
        rate: float,
        chunk: int,
        metrics: FlushMetrics | None = None,
        nodes: Sequence[aioredis.Redis] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not patterns:
            raise ValueError("a flush needs at least one pattern")
        self._client = client
        #: What SCAN walks: the server itself, or each primary of a cluster (a cursor is per node there);
        #: on a node, keys of many slots are unlinked one command each (a multi-key UNLINK must be one slot).
        self._nodes = list(nodes) if nodes is not None else [client]
        self._per_key = nodes is not None
        self.patterns = list(patterns)
        # slotguard's own state (schedules, journals, this checkpoint) lives under <prefix>slotguard: and
        # is never flushed, whatever a pattern matches.
        self._own = f"{key_prefix}slotguard:".encode()
        self.checkpoint = f"{key_prefix}slotguard:flush:{job_name(self.patterns)}"
        self._rate = rate
        self._chunk = chunk
        self._metrics = metrics or FlushMetrics()
        self._clock = clock

    async def count(self) -> int:
        """How many keys the patterns match now (one full SCAN, nothing deleted)."""
        total = 0
        for pattern in self.patterns:
            for node in self._nodes:
                async for key in node.scan_iter(match=pattern, count=self._chunk):
                    if not _own(key, self._own):
                        total += 1
        return total

    async def pending(self) -> FlushProgress | None:
        """The checkpoint of an unfinished run of this job, if one was killed."""
        saved = await self._client.hgetall(self.checkpoint)
        if not saved:
            return None
        return FlushProgress(
            pattern_index=int(saved[b"index"]),
            node_index=int(saved.get(b"node", 0)),
            cursor=int(saved[b"cursor"]),
            scanned=int(saved[b"scanned"]),
            deleted=int(saved[b"deleted"]),
            resumed=True,
        )

    async def run(self) -> FlushProgress:
        """Delete every matching key; resumes a killed run of the same job. Returns the totals."""
        progress = await self.pending() or FlushProgress()
        if progress.resumed:
            log.info(
                "resuming flush %s at pattern %d cursor %d: %d key(s) deleted before",
                self.checkpoint,
                progress.pattern_index,
                progress.cursor,
                progress.deleted,
            )
        else:
            await self._save(progress)
        started = self._clock()
        deleted_here = 0
        next_report = started + PROGRESS_EVERY_S
        self._metrics.running.set(1)
        try:
            while progress.pattern_index < len(self.patterns):
                pattern = self.patterns[progress.pattern_index]
                node = self._nodes[progress.node_index]
                cursor, keys = await node.scan(progress.cursor, match=pattern, count=self._chunk)
                mine = [k for k in keys if not _own(k, self._own)]
                if mine and self._per_key:
                    async with node.pipeline(transaction=False) as pipe:
                        for key in mine:
                            pipe.unlink(key)
                        await pipe.execute()
                elif mine:
                    await node.unlink(*mine)
                progress.scanned += len(keys)
                progress.deleted += len(mine)
                deleted_here += len(mine)
                self._metrics.scanned.inc(len(keys))
                self._metrics.deleted.inc(len(mine))
                if cursor == 0:
                    progress.node_index += 1
                    if progress.node_index == len(self._nodes):
                        progress.node_index = 0
                        progress.pattern_index += 1
                progress.cursor = int(cursor)
                await self._save(progress)
                now = self._clock()
                if now >= next_report:
                    log.info(
                        "flush: %d key(s) deleted, %d scanned, pattern %d of %d, %.0f keys/s",
                        progress.deleted,
                        progress.scanned,
                        min(progress.pattern_index + 1, len(self.patterns)),
                        len(self.patterns),
                        deleted_here / max(now - started, 1e-9),
                    )
                    next_report = now + PROGRESS_EVERY_S
                # The rate limit: never ahead of `rate` deletions a second since this run started.
                ahead = deleted_here / self._rate - (now - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            self._metrics.running.set(0)
        await self._client.delete(self.checkpoint)
        progress.seconds = self._clock() - started
        return progress

    async def _save(self, progress: FlushProgress) -> None:
        await self._client.hset(
            self.checkpoint,
            mapping={
                "patterns": orjson.dumps(self.patterns),
                "index": progress.pattern_index,
                "node": progress.node_index,
                "cursor": progress.cursor,
                "scanned": progress.scanned,
                "deleted": progress.deleted,
            },
        )
