"""The agent: one batch of appointment changes -> read -> derive -> one UNLINK -> events / dead letters.

:class:`BatchHandler` is the unit that derives events. It knows nothing of Kafka consumption (the
consumer in :mod:`processor.worker.consumer` calls it and commits) and returns only once everything the
batch owes is acknowledged: Redis took the UNLINK, Kafka took every derived event and dead letter. Each
change is read once (:func:`~processor.core.read.read_change`); what the batch's changes need from Postgres
is fetched once per batch; each is derived once. Failures follow :mod:`processor.worker.policy`.
"""

from __future__ import annotations

import asyncio
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

#: Changes derived between two returns to the event loop. A batch derived in one go (~13 ms for 2,000)
#: kept the loop from noticing the acknowledgements of the batches in flight meanwhile -- Redis' reply to
#: one's UNLINK, Kafka's to the other's events --, and the next step of each waited for the whole batch
#: (drains, 6 interleaved rounds with the 1 ms acknowledgement poll: never 54,853/s, every 100 changes
#: 59,542/s; another run with a 0.5 ms poll: every 250 changes 56,297/s, every 100 58,150/s).
YIELD_EVERY = 100


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


class PreparedBatch:
    """A batch whose changes are derived, not yet deleted or published (:meth:`BatchHandler.prepare`).

    Parallel lists, not an object per change: ``outcomes[i]`` is ``records[i]``'s outcome, ``None`` where
    ``errors`` holds why it goes to the dead-letter topic (with its op for the metrics: "?" when it could
    not be read); ``keys`` are every outcome's Redis keys."""

    __slots__ = ("errors", "keys", "outcomes", "records")

    def __init__(
        self,
        records: Sequence[Record],
        outcomes: list[Outcome | None],
        errors: dict[int, tuple[InputError, str]],
        keys: list[str],
    ) -> None:
        self.records = records
        self.outcomes = outcomes
        self.errors = errors
        self.keys = keys


def _without_tracebacks(error: InputError) -> InputError:
    """``error`` with no traceback on it or the errors it came from (``__cause__``, ``__context__``).

    A traceback holds the frames it passed, and through them ``prepare``'s frame, whose locals hold the
    batch and the error itself: a cycle that kept the whole batch alive until the cycle collector's next
    run (by the clock in the worker: up to ten seconds for a batch alive at a young collection,
    ``slotguard.commands.worker``). A dead letter needs only the error's class and text."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__)
    return error


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
        config = self._config
        resolver = self._resolver
        fast = config.fast.outcome if config.fast is not None else None
        outcomes: list[Outcome | None] = []
        keys: list[str] = []
        # The fast path takes the common change whole; the rest is read, prefetched for and derived by the
        # reference path (processor.core.fastpath says which is which).
        slow: list[int] = []
        for i, record in enumerate(records):
            if i and not i % YIELD_EVERY:
                await asyncio.sleep(0)
            outcome = fast(record.value, resolver) if fast is not None else None
            if outcome is None:
                slow.append(len(outcomes))
            else:
                keys += outcome.redis_keys
            outcomes.append(outcome)
        errors: dict[int, tuple[InputError, str]] = {}
        if slow:
            reads: dict[int, ReadChange] = {}
            for i in slow:
                try:
                    reads[i] = read_change(records[i].value, config)
                except InputError as exc:
                    errors[i] = (_without_tracebacks(exc), "?")
            await prefetch(reads.values(), config, resolver, self._policy)
            for i, read in reads.items():
                try:
                    outcome = outcomes[i] = derive(read, config, resolver)
                except InputError as exc:
                    errors[i] = (_without_tracebacks(exc), read.op or "tombstone")
                else:
                    keys += outcome.redis_keys
        return PreparedBatch(records, outcomes, errors, keys)

    async def complete(self, batch: PreparedBatch) -> BatchResult:
        """Delete the batch's keys, then publish its events and dead letters; returns once Redis and Kafka
        acknowledged everything (retrying under the failure policy until they do)."""
        return await self.publish(batch, await self.delete(batch))

    async def delete(self, batch: PreparedBatch) -> BatchResult:
        """The first half of :meth:`complete`: returns once Redis acknowledged the UNLINK of every key of
        the batch (retrying until it does). The consumer may start the next batch's delete then, while
        this batch's events are still being published."""
        outcomes = batch.outcomes
        result = BatchResult(changes=len(outcomes))
        # Unique, in first-seen order (UNLINK does not care about order; a sort cost more than the set).
        keys = list(dict.fromkeys(batch.keys))
        result.total_keys = len(keys)
        if keys:
            # Blocks (retrying) until Redis acknowledged: nothing below -- and no commit -- happens before.
            result.keys_deleted = await self._policy.retry("redis", lambda: self._invalidator.unlink(keys))
            acked_ms = self._clock() * 1000.0
            self._metrics.commit_to_delete.observe_many(
                [
                    max(0.0, acked_ms - o.source_ts_ms) / 1000.0
                    for o in outcomes
                    if o is not None and o.redis_keys and o.source_ts_ms is not None
                ]
            )
        return result

    async def publish(self, batch: PreparedBatch, result: BatchResult) -> BatchResult:
        """The second half of :meth:`complete`, after :meth:`delete`: publish the events and dead letters
        and return once Kafka acknowledged them all (retrying until it does)."""
        if batch.errors or any(o is not None and o.records for o in batch.outcomes):
            await self._policy.retry("kafka", lambda: self._publish(batch))

        self._account(batch, result)
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

    async def _publish(self, batch: PreparedBatch) -> None:
        """Send every derived event and dead letter of the batch, in record order, and wait for all
        acknowledgements; the events between two dead letters go in one call.

        A retry sends all of them again: events are at least once (consumers dedupe by ``event_id``)."""
        publisher = self._publisher
        outcomes, errors = batch.outcomes, batch.errors
        begin = 0
        for end in (*sorted(errors), len(outcomes)):
            await publisher.send_many(
                self._events_topic,
                [e for o in outcomes[begin:end] if o is not None for e in o.records],
            )
            if end < len(outcomes):
                r = batch.records[end]
                await publisher.send(self._dlq_topic, r.key, r.value, dead_letter_headers(r, errors[end][0]))
            begin = end + 1
        await publisher.flush()

    def _account(self, batch: PreparedBatch, result: BatchResult) -> None:
        m = self._metrics
        m.batches.inc()
        m.keys_requested.inc(result.total_keys)
        m.keys_deleted.inc(result.keys_deleted)
        # Counted per batch, one labels() call per distinct label set: per change it cost more than the
        # core's own work on the fast path.
        by_outcome: Counter[tuple[str, str]] = Counter()
        by_type: Counter[str] = Counter()
        unresolved = 0
        for i, (error, op) in batch.errors.items():
            record = batch.records[i]
            result.dead_lettered += 1
            by_outcome[(op, "dlq")] += 1
            m.dlq.labels(error_class=type(error).__name__).inc()
            log.warning(
                "change dead-lettered",
                extra={
                    "error": str(error),
                    "error_class": type(error).__name__,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                },
            )
        outcomes = [o for o in batch.outcomes if o is not None]
        # Counter's C loop over generators: a Python statement per change cost more than the rest here.
        by_outcome.update((o.op or "tombstone", "invalidated" if o.redis_keys else "noop") for o in outcomes)
        by_type.update(e.type for o in outcomes for e in o.records)
        for i, outcome in enumerate(batch.outcomes):
            if outcome is None or not (outcome.warnings or outcome.unresolved_event_types):
                continue
            unresolved += outcome.unresolved_event_types
            record = batch.records[i]
            for warning in outcome.warnings:
                result.warnings.append(warning)
                m.warnings.inc()
                log.warning(
                    "change processed with a warning",
                    extra={"warning": warning, "partition": record.partition, "offset": record.offset},
                )
        for (change_op, what), count in by_outcome.items():
            m.changes.labels(op=change_op, outcome=what).inc(count)
        for kind, count in by_type.items():
            result.events += count
            m.events.labels(type=kind).inc(count)
        if unresolved:
            m.unknown_event_types.inc(unresolved)
