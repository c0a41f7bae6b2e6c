"""The agent: one batch of appointment changes -> read -> derive -> one UNLINK -> events / dead letters.

:class:`BatchHandler` is the unit that derives events. It knows nothing of Kafka consumption (the
consumer in :mod:`processor.worker.consumer` calls it and commits) and returns only once everything the
batch owes is acknowledged: Redis took the UNLINK, Kafka took every derived event and dead letter. Each
change is read once (:func:`~processor.core.read.read_change`); what the batch's changes need from Postgres
is fetched once per batch; each is derived once. Failures follow :mod:`processor.worker.policy`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from processor.core.config import CoreConfig
from processor.core.derive import derive
from processor.core.outcome import Outcome
from processor.core.read import ReadChange, read_change
from processor.worker.crashloop import CrashJournal, batch_marks
from processor.worker.dlq import Record, dead_letter_headers, error_class, fit_dead_letter
from processor.worker.errors import CrashLoop, RedisUnavailable
from processor.worker.metrics import WorkerMetrics
from processor.worker.policy import FailurePolicy, record_error
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
    run reached its generation. A dead letter needs only the error's class and text."""
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
        max_record_bytes: int,
        journal: CrashJournal | None = None,
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
        self._journal = journal
        self._journal_down = False
        self._max_record_bytes = max_record_bytes
        self._clock = clock

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        """Derive, then delete and publish: :meth:`prepare` and :meth:`complete` in one call."""
        return await self.complete(await self.prepare(records))

    async def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Read and derive every change (Postgres lookups for services the resolver lacks included);
        nothing is deleted or published yet, so the consumer may prepare the next batch while
        the previous one is completing.

        Whatever a record makes fail goes to the dead-letter topic (:func:`record_error`); with a crash
        journal, the batch is marked in Redis meanwhile, and records the worker died on before are handled
        one at a time (:mod:`processor.worker.crashloop`)."""
        outcomes: list[Outcome | None] = [None] * len(records)
        errors: dict[int, tuple[InputError, str]] = {}
        journal = self._journal
        if journal is None:
            await self._derive(records, range(len(records)), outcomes, errors)
        else:
            if not journal.loaded:
                await self._journal_call(journal.load)
            marks = batch_marks(records)
            if not journal.suspected(records):
                await self._journal_call(functools.partial(journal.mark, marks))
                await self._derive(records, range(len(records)), outcomes, errors)
            else:
                await self._derive_carefully(journal, records, outcomes, errors)
            await self._journal_call(functools.partial(journal.unmark, marks))
            journal.cleared(records)
        keys: list[str] = []
        for outcome in outcomes:
            if outcome is not None:
                keys += outcome.redis_keys
        return PreparedBatch(records, outcomes, errors, keys)

    async def _journal_call(self, call: Callable[[], Awaitable[None]]) -> None:
        """One attempt at the crash journal. Without Redis the batch is derived unmarked rather than held
        here: ``prepare`` runs in the consumer's loop, and a retry here would stop it serving the group
        (a rebalance waited for Redis). The batch's delete waits for Redis anyway."""
        try:
            await call()
        except RedisUnavailable as exc:
            if not self._journal_down:
                log.warning(
                    "crash journal unavailable; batches go unmarked until Redis answers",
                    extra={"error": str(exc)},
                )
            self._journal_down = True
        else:
            self._journal_down = False

    async def _derive_carefully(
        self,
        journal: CrashJournal,
        records: Sequence[Record],
        outcomes: list[Outcome | None],
        errors: dict[int, tuple[InputError, str]],
    ) -> None:
        """One record at a time, each marked alone: the worker died on one of these before."""
        for i, record in enumerate(records):
            deaths = journal.deaths(record)
            if deaths >= journal.after:
                errors[i] = (CrashLoop(deaths), "?")
                self._metrics.crash_loops.inc()
                log.error(
                    "a record crashed the worker %d times in a row: dead-lettered, not handled",
                    deaths,
                    extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
                )
                continue
            mark = {(record.topic, record.partition): (record.offset, record.offset, deaths)}
            await self._journal_call(functools.partial(journal.mark, mark))
            await self._derive(records, (i,), outcomes, errors)

    async def _derive(
        self,
        records: Sequence[Record],
        indices: Sequence[int],
        outcomes: list[Outcome | None],
        errors: dict[int, tuple[InputError, str]],
    ) -> None:
        """Derive ``records[i]`` for each of ``indices`` into ``outcomes[i]``, or ``errors[i]``."""
        config = self._config
        resolver = self._resolver
        reads: dict[int, ReadChange] = {}
        for n, i in enumerate(indices):
            if n and not n % YIELD_EVERY:
                await asyncio.sleep(0)
            try:
                reads[i] = read_change(records[i].value, config)
            except Exception as exc:  # the boundary: whatever the record does (policy.record_error)
                errors[i] = (_without_tracebacks(record_error(exc)), "?")
        await prefetch(reads.values(), config, resolver, self._policy)
        for n, (i, read) in enumerate(reads.items()):
            if n and not n % YIELD_EVERY:
                await asyncio.sleep(0)
            try:
                outcome = derive(read, config, resolver)
            except Exception as exc:
                errors[i] = (_without_tracebacks(record_error(exc)), read.op or "tombstone")
            else:
                outcomes[i] = outcome

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
            observe = self._metrics.commit_to_delete.observe
            for o in outcomes:
                if o is not None and o.redis_keys and o.source_ts_ms is not None:
                    observe(max(0.0, acked_ms - o.source_ts_ms) / 1000.0)
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
                key, value, headers = fit_dead_letter(
                    r.key, r.value, dead_letter_headers(r, errors[end][0]), self._max_record_bytes
                )
                await publisher.send(self._dlq_topic, key, value, headers)
            begin = end + 1
        await publisher.flush()

    def _account(self, batch: PreparedBatch, result: BatchResult) -> None:
        m = self._metrics
        m.batches.inc()
        m.keys_requested.inc(result.total_keys)
        m.keys_deleted.inc(result.keys_deleted)
        # Counted per batch: one labels() call per distinct label set, not one per change.
        by_outcome: Counter[tuple[str, str]] = Counter()
        by_type: Counter[str] = Counter()
        unresolved = 0
        for i, (error, op) in batch.errors.items():
            record = batch.records[i]
            result.dead_lettered += 1
            by_outcome[(op, "dlq")] += 1
            m.dlq.labels(error_class=error_class(error)).inc()
            log.warning(
                "change dead-lettered",
                extra={
                    "error": str(error),
                    "error_class": error_class(error),
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
