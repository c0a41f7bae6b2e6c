"""The agent: one batch of appointment changes -> read -> derive -> one UNLINK -> events / dead letters.

:class:`BatchHandler` is the unit that derives events. It knows nothing of Kafka consumption (the
consumer in :mod:`processor.worker.consumer` calls it and commits) and returns only once everything the
batch owes is acknowledged: Redis took the UNLINK, Kafka took every derived event and dead letter. Each
change is read once (:func:`~processor.core.read.read_change`); what the batch's changes need from Postgres
is fetched once per batch; each is derived once. Failures follow :mod:`processor.worker.policy`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from processor.core.config import CoreConfig
from processor.core.derive import derive
from processor.core.outcome import Outcome
from processor.core.read import ReadChange, read_change
from processor.worker.dlq import Record, dead_letter_headers
from processor.worker.metrics import WorkerMetrics
from processor.worker.policy import FailurePolicy
from processor.worker.publisher import Publisher
from processor.worker.resolution import LayeredResolver, prefetch
from schemas.errors import InputError

log = logging.getLogger("slotguard.worker")


class Invalidator(Protocol):
    """Deletes keys (one attempt); returns the number that existed once the store acknowledged."""

    async def unlink(self, keys: Sequence[str]) -> int: ...


@dataclass
class BatchResult:
    """What one batch did (for logs, metrics and tests)."""

    changes: int = 0
    dead_lettered: int = 0
    events: int = 0
    total_keys: int = 0
    keys_deleted: int = 0
    warnings: list[str] = field(default_factory=list)


class _Change:
    """One record on its way through the batch (slotted: one per change on the hot path)."""

    __slots__ = ("error", "outcome", "read", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.read: ReadChange | None = None
        self.outcome: Outcome | None = None
        self.error: InputError | None = None

    @property
    def op(self) -> str:
        if self.outcome is not None:
            return self.outcome.op or "tombstone"
        if self.read is None:
            return "?"
        return self.read.op or "tombstone"


class PreparedBatch:
    """A batch whose changes are derived, not yet deleted or published (:meth:`BatchHandler.prepare`)."""

    __slots__ = ("changes",)

    def __init__(self, changes: list[_Change]) -> None:
        self.changes = changes


class BatchHandler:
    """Handles a batch of appointment change records; returns once everything it owes is acknowledged."""

    def __init__(
        self,
        *,
        config: CoreConfig,
        resolver: LayeredResolver,
        invalidator: Invalidator,
        publisher: Publisher,
        policy: FailurePolicy,
        metrics: WorkerMetrics,
        events_topic: str,
        dlq_topic: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._resolver = resolver
        self._invalidator = invalidator
        self._publisher = publisher
        self._policy = policy
        self._metrics = metrics
        self._events_topic = events_topic
        self._dlq_topic = dlq_topic
        self._clock = clock

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        """Derive, then delete and publish: :meth:`prepare` and :meth:`complete` in one call."""
        return await self.complete(await self.prepare(records))

    async def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Read and derive every change (Postgres lookups for the reference path's unknown services
        included); nothing is deleted or published yet, so the consumer may prepare the next batch while
        the previous one is completing."""
        changes = [_Change(r) for r in records]
        config = self._config
        resolver = self._resolver
        fast = config.fast.outcome if config.fast is not None else None
        # The fast path takes the common change whole; the rest is read, prefetched for and derived by the
        # reference path (processor.core.fastpath says which is which).
        slow: list[_Change] = []
        for change in changes:
            value = change.record.value
            if fast is not None:
                outcome = fast(value, resolver)
                if outcome is not None:
                    change.outcome = outcome
                    continue
            try:
                change.read = read_change(value, config)
            except InputError as exc:
                change.error = exc
                continue
            slow.append(change)
        if slow:
            await prefetch((c.read for c in slow if c.read is not None), config, resolver, self._policy)
            for change in slow:
                if change.read is not None:
                    try:
                        change.outcome = derive(change.read, config, resolver)
                    except InputError as exc:
                        change.error = exc
        return PreparedBatch(changes)

    async def complete(self, batch: PreparedBatch) -> BatchResult:
        """Delete the batch's keys, then publish its events and dead letters; returns once Redis and Kafka
        acknowledged everything (retrying under the failure policy until they do)."""
        changes = batch.changes
        result = BatchResult(changes=len(changes))
        # Unique, in first-seen order (UNLINK does not care about order; a sort cost more than the set).
        keys = list(dict.fromkeys(k for c in changes if c.outcome is not None for k in c.outcome.redis_keys))
        result.total_keys = len(keys)
        if keys:
            # Blocks (retrying) until Redis acknowledged: nothing below -- and no commit -- happens before.
            result.keys_deleted = await self._policy.retry("redis", lambda: self._invalidator.unlink(keys))
            acked_at = self._clock()
            observe = self._metrics.commit_to_delete.observe
            for c in changes:
                outcome = c.outcome
                if outcome is not None and outcome.redis_keys and outcome.source_ts_ms is not None:
                    observe(max(0.0, acked_at - outcome.source_ts_ms / 1000.0))

        if any(c.error is not None or (c.outcome is not None and c.outcome.records) for c in changes):
            await self._policy.retry("kafka", lambda: self._publish(changes))

        self._account(changes, result)
        log.info(
            "cache invalidation complete",
            extra={
                "keys_deleted": result.keys_deleted,
                "total_keys": result.total_keys,
                "changes": result.changes,
                "events": result.events,
                "dead_lettered": result.dead_lettered,
            },
        )
        return result

    async def _publish(self, changes: Sequence[_Change]) -> None:
        """Send every derived event and dead letter of the batch and wait for all acknowledgements.

        A retry sends all of them again: events are at least once (consumers dedupe by ``event_id``)."""
        send = self._publisher.send
        for c in changes:
            if c.error is not None:
                r = c.record
                await send(self._dlq_topic, r.key, r.value, dead_letter_headers(r, c.error))
            elif c.outcome is not None:
                for event in c.outcome.records:
                    await send(self._events_topic, event.key, event.value, ())
        await self._publisher.flush()

    def _account(self, changes: Sequence[_Change], result: BatchResult) -> None:
        m = self._metrics
        m.batches.inc()
        m.keys_requested.inc(result.total_keys)
        m.keys_deleted.inc(result.keys_deleted)
        # Counted per batch, one labels() call per distinct label set: per change it cost more than the
        # core's own work on the fast path.
        by_outcome: Counter[tuple[str, str]] = Counter()
        by_type: Counter[str] = Counter()
        unresolved = 0
        for c in changes:
            if c.error is not None:
                result.dead_lettered += 1
                by_outcome[(c.op, "dlq")] += 1
                m.dlq.labels(error_class=type(c.error).__name__).inc()
                log.warning(
                    "change dead-lettered",
                    extra={
                        "error": str(c.error),
                        "error_class": type(c.error).__name__,
                        "topic": c.record.topic,
                        "partition": c.record.partition,
                        "offset": c.record.offset,
                    },
                )
                continue
            outcome = c.outcome
            assert outcome is not None
            by_outcome[(outcome.op or "tombstone", "invalidated" if outcome.redis_keys else "noop")] += 1
            for event in outcome.records:
                by_type[event.type] += 1
            unresolved += outcome.unresolved_event_types
            for warning in outcome.warnings:
                result.warnings.append(warning)
                m.warnings.inc()
                log.warning(
                    "change processed with a warning",
                    extra={"warning": warning, "partition": c.record.partition, "offset": c.record.offset},
                )
        for (op, what), count in by_outcome.items():
            m.changes.labels(op=op, outcome=what).inc(count)
        for kind, count in by_type.items():
            result.events += count
            m.events.labels(type=kind).inc(count)
        if unresolved:
            m.unknown_event_types.inc(unresolved)
