"""The batch step of the worker: bytes -> core -> one UNLINK -> derived events / dead letters.

:class:`BatchProcessor` is the whole behaviour and knows nothing of Faust (the unit tests drive it with
fakes); :func:`run_batches` is the thin Faust agent body around it, which owns acknowledgement:

* the stream is consumed with ``noack_take`` -- Faust's ``take()`` acks a batch in a ``finally`` block,
  i.e. also when the body is interrupted (shutdown while Redis is down), which would commit offsets whose
  keys were never deleted;
* each event is acked by hand only after :meth:`BatchProcessor.handle` returned, i.e. after Redis
  acknowledged the UNLINK and Kafka acknowledged every derived event and dead-letter record.
Faust commits the highest *contiguous* acked offset per partition, so nothing behind an unfinished batch is
committed either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processor.core.pipeline import CoreConfig, Outcome
from processor.worker.dlq import SourceRecord, dead_letter_headers
from processor.worker.errors import PublishFailed
from processor.worker.metrics import WorkerMetrics
from processor.worker.resolution import LayeredResolver, resolve_then_process
from slotguard.errors import InputError

log = logging.getLogger("slotguard.worker")


class Invalidator(Protocol):
    """Deletes keys; returns (the number that existed) only once the store acknowledged."""

    async def unlink(self, keys: Sequence[str]) -> int: ...


class Publisher(Protocol):
    """Sends one record; the returned awaitable completes when the broker acknowledged it."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]: ...


@dataclass
class BatchResult:
    """What one batch did (for logs, metrics and tests)."""

    changes: int = 0
    dead_lettered: int = 0
    events: int = 0
    total_keys: int = 0
    keys_deleted: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Handled:
    record: SourceRecord
    op: str
    ts_ms: int | None
    outcome: Outcome | None = None
    error: InputError | None = None


class BatchProcessor:
    """Processes a batch of appointment change records; returns once everything it owes is acknowledged."""

    def __init__(
        self,
        *,
        config: CoreConfig,
        resolver: LayeredResolver,
        invalidator: Invalidator,
        publisher: Publisher,
        metrics: WorkerMetrics,
        events_topic: str,
        dlq_topic: str,
        clock: Any = time.time,
    ) -> None:
        self._config = config
        self._resolver = resolver
        self._invalidator = invalidator
        self._publisher = publisher
        self._metrics = metrics
        self._events_topic = events_topic
        self._dlq_topic = dlq_topic
        self._clock = clock

    async def _one(self, record: SourceRecord) -> _Handled:
        try:
            outcome = await resolve_then_process(record.value, self._config, self._resolver)
        except InputError as exc:
            return _Handled(record, "?", None, error=exc)
        return _Handled(record, outcome.op or "tombstone", outcome.source_ts_ms, outcome=outcome)

    async def handle(self, records: Sequence[SourceRecord]) -> BatchResult:
        result = BatchResult(changes=len(records))
        handled = [await self._one(r) for r in records]

        keys = sorted({k for h in handled if h.outcome is not None for k in h.outcome.redis_keys})
        result.total_keys = len(keys)
        if keys:
            # Blocks (retrying) until Redis acknowledged: nothing below -- and no ack -- happens before.
            result.keys_deleted = await self._invalidator.unlink(keys)
            acked_at = self._clock()
            for h in handled:
                if h.outcome is not None and h.outcome.redis_keys and h.ts_ms is not None:
                    self._metrics.commit_to_delete.observe(max(0.0, acked_at - h.ts_ms / 1000.0))

        pending: list[Awaitable[Any]] = []
        for h in handled:
            if h.error is not None:
                pending.append(await self._dead_letter(h.record, h.error))
                continue
            assert h.outcome is not None
            for event in h.outcome.events:
                pending.append(
                    await self._send(self._events_topic, event.appointment_id.encode(), event.to_json(), ())
                )
        await self._await_all(pending)

        self._account(handled, result)
        self._metrics.batches.inc()
        self._metrics.keys_requested.inc(result.total_keys)
        self._metrics.keys_deleted.inc(result.keys_deleted)
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

    def _account(self, handled: Sequence[_Handled], result: BatchResult) -> None:
        for h in handled:
            if h.error is not None:
                result.dead_lettered += 1
                self._metrics.changes.labels(op=h.op, outcome="dlq").inc()
                self._metrics.dlq.labels(error_class=type(h.error).__name__).inc()
                continue
            assert h.outcome is not None
            outcome = "invalidated" if h.outcome.redis_keys else "noop"
            self._metrics.changes.labels(op=h.op, outcome=outcome).inc()
            for event in h.outcome.events:
                result.events += 1
                self._metrics.events.labels(type=event.type).inc()
            self._metrics.unknown_event_types.inc(h.outcome.unresolved_event_types)
            for warning in h.outcome.warnings:
                result.warnings.append(warning)
                self._metrics.warnings.inc()
                log.warning(
                    "change processed with a warning",
                    extra={"warning": warning, "partition": h.record.partition, "offset": h.record.offset},
                )

    async def _dead_letter(self, record: SourceRecord, error: InputError) -> Awaitable[Any]:
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
        return await self._send(self._dlq_topic, record.key, record.value, dead_letter_headers(record, error))

    async def _send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        try:
            return await self._publisher.send(topic, key, value, headers)
        except Exception as exc:  # the Kafka client's errors, whatever their class
            raise PublishFailed(f"could not publish to {topic}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    async def _await_all(pending: Sequence[Awaitable[Any]]) -> None:
        try:
            await asyncio.gather(*pending)
        except Exception as exc:
            raise PublishFailed(f"Kafka did not acknowledge a record: {type(exc).__name__}: {exc}") from exc
