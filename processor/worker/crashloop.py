"""The crash-loop breaker: a record that kills the worker outright is dead-lettered after N deaths.

Most failures a record causes are exceptions, and the per-record boundary dead-letters them
(:func:`~processor.worker.policy.record_error`). Some cannot be caught: a segfault in a C extension, the
kernel's OOM killer, a ``RecursionError`` deep in C. With at-least-once delivery such a record would be read
again after every restart and kill the worker again, holding its partition for good.

So while the worker reads and derives a batch, Redis holds a mark per partition -- the offsets being handled
and how many deaths were already put down to them -- in one hash next to the second-delete schedule
(``<prefix>slotguard:handling:<group>``, field ``<topic>:<partition>``), removed once the batch is derived.
A mark found on start means the worker died while handling those offsets. The next pass over them goes
one record at a time, each marked alone, so the next death names its record; a record with ``after``
deaths is dead-lettered (:class:`~processor.worker.errors.CrashLoop`) instead of handled.

Redis, not a local file, so that the count follows the partition to whichever worker owns it next and
survives the pod. Each call is one attempt: while Redis is down batches go unmarked (the worker must keep
serving its group, and the batch's delete waits for Redis anyway), so a death then is not counted. A worker that takes over a partition from a live one mid-batch may read that worker's
mark as a death: the only effect is one careful, record-by-record pass over that batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.worker.dlq import Record
from processor.worker.errors import RedisUnavailable

log = logging.getLogger("slotguard.worker.crashloop")

#: Hash (after the key prefix and before the group) of the partitions' marks.
HANDLING_KEY = "slotguard:handling:"

Partition = tuple[str, int]
#: A mark: the first and last offset being handled, and the deaths already put down to them.
Mark = tuple[int, int, int]


def _field(tp: Partition) -> str:
    return f"{tp[0]}:{tp[1]}"


class CrashJournal:
    """Marks in Redis which records are being handled; says how often the worker died on a record."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, group: str, after: int) -> None:
        if after < 1:
            raise ValueError("crash_loop_after must be at least 1")
        self._client = client
        self.key = f"{key_prefix}{HANDLING_KEY}{group}"
        #: Deaths after which a record is dead-lettered.
        self.after = after
        #: Marks left by a worker that died (read once, on the first batch): offsets -> deaths so far.
        self._suspects: dict[Partition, Mark] | None = None

    @property
    def loaded(self) -> bool:
        return self._suspects is not None

    async def load(self) -> None:
        """Read the marks a dead worker left (once; a retry under the failure policy is safe)."""
        try:
            raw: Mapping[Any, Any] = await self._client.hgetall(self.key)
        except RedisError as exc:
            raise RedisUnavailable(f"cannot read the crash journal: {type(exc).__name__}") from None
        suspects: dict[Partition, Mark] = {}
        for name, value in raw.items():
            text = name.decode() if isinstance(name, bytes) else str(name)
            topic, _, partition = text.rpartition(":")
            try:
                first, last, deaths = orjson.loads(value)
                suspects[(topic, int(partition))] = (int(first), int(last), int(deaths) + 1)
            except (ValueError, TypeError):
                log.warning("an unreadable crash-journal mark was ignored", extra={"field": text[:200]})
        if suspects:
            log.warning(
                "the worker died while handling records; reading them one at a time",
                extra={"partitions": len(suspects)},
            )
        self._suspects = suspects

    def deaths(self, record: Record) -> int:
        """Deaths put down to ``record`` so far (0: never suspected)."""
        mark = (self._suspects or {}).get((record.topic, record.partition))
        if mark is None:
            return 0
        first, last, deaths = mark
        return deaths if first <= record.offset <= last else 0

    def suspected(self, records: Iterable[Record]) -> bool:
        return bool(self._suspects) and any(self.deaths(r) for r in records)

    def cleared(self, records: Iterable[Record]) -> None:
        """These records were handled without a death: they are suspects no more."""
        if not self._suspects:
            return
        for record in records:
            tp = (record.topic, record.partition)
            mark = self._suspects.get(tp)
            if mark is not None and record.offset >= mark[1]:
                del self._suspects[tp]

    async def mark(self, marks: Mapping[Partition, Mark]) -> None:
        """Put down that these offsets are being handled now (one round trip)."""
        mapping: dict[str | bytes, bytes | str] = {
            _field(tp): orjson.dumps(mark) for tp, mark in marks.items()
        }
        try:
            await self._client.hset(self.key, mapping=mapping)  # type: ignore[arg-type]
        except RedisError as exc:
            raise RedisUnavailable(f"cannot write the crash journal: {type(exc).__name__}") from None

    async def unmark(self, partitions: Iterable[Partition]) -> None:
        """The batch is derived: no death while handling it can happen any more."""
        fields = [_field(tp) for tp in partitions]
        if not fields:
            return
        try:
            await self._client.hdel(self.key, *fields)
        except RedisError as exc:
            raise RedisUnavailable(f"cannot write the crash journal: {type(exc).__name__}") from None


def batch_marks(records: Iterable[Record]) -> dict[Partition, Mark]:
    """A batch's marks: per partition its first and last offset, no deaths yet."""
    marks: dict[Partition, Mark] = {}
    for r in records:
        tp = (r.topic, r.partition)
        mark = marks.get(tp)
        marks[tp] = (r.offset, r.offset, 0) if mark is None else (mark[0], r.offset, 0)
    return marks
