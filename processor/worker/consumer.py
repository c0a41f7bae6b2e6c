"""The appointments consumer: aiokafka batches in the worker's consumer group, manual commits.

Why not Faust's agent stream: its per-event machinery alone caps near 10k records/s on a 2-core machine,
and it acks generation-skipped events after a rebalance (docs/worker.md has the measurements). This
consumer keeps the commit rules simple enough to state and test:

1. a batch is ``getmany`` (records of each partition in offset order) handed whole to the
   :class:`~processor.worker.handler.BatchHandler`: ``prepare`` derives it, ``complete`` returns only once
   Redis and Kafka acknowledged everything the batch owed. The next batch may be prepared meanwhile, but
   batches complete one after the other, in order;
2. only then is each partition's next offset (last record + 1) committed -- never past a record that was
   not fully handled, since a batch is handled completely or not at all;
3. commits go only to partitions still assigned; on revocation whatever is done but not yet committed is
   committed, and an in-flight batch is not waited for (it may be retrying against a dead Redis): its
   partitions' next owner redoes it. Redoing is harmless: ``UNLINK`` is idempotent, events carry ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from processor.worker.dlq import Record
from processor.worker.metrics import WorkerMetrics
from schemas.connections import KafkaConnection

log = logging.getLogger("slotguard.worker.consumer")


class Handler(Protocol):
    """What the consumer drives (:class:`~processor.worker.handler.BatchHandler`): ``prepare`` derives a
    batch, ``complete`` deletes and publishes it and returns once everything is acknowledged. aiokafka's
    ConsumerRecords are handed over as they are (they satisfy :class:`Record`): wrapping each one cost more
    than the rest of the consumer's work per record."""

    async def prepare(self, records: Sequence[Record]) -> Any: ...

    async def complete(self, batch: Any) -> object: ...


class AppointmentsConsumer:
    """Consumes the appointments topic in the group and commits by the rules in the module docstring."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        group: str,
        topic: str,
        handler: Handler,
        metrics: WorkerMetrics,
        batch_size: int = 2000,
        batch_timeout: float = 0.005,
        session_timeout: float = 30.0,
        rebalance_timeout: float = 60.0,
        fetch_max_wait_ms: int = 10,
        client_id: str = "slotguard-worker",
        redo_window: float = 0.0,
    ) -> None:
        self._kafka = kafka
        self._group = group
        self._topic = topic
        self._handler = handler
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_timeout_ms = max(1, int(batch_timeout * 1000))
        self._session_timeout_ms = int(session_timeout * 1000)
        self._rebalance_timeout_ms = int(rebalance_timeout * 1000)
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._client_id = client_id
        #: Seconds of history redone on every assignment (0: off) -- see :meth:`redo_recent`.
        self._redo_window = redo_window
        self._consumer: AIOKafkaConsumer | None = None
        #: Next offset to read per partition, for everything handled (committed or not yet).
        self._done: dict[TopicPartition, int] = {}
        #: What this worker last committed per partition.
        self.committed: dict[TopicPartition, int] = {}
        self.running = False
        #: Set once the group assigned partitions to this worker for the first time.
        self.assigned_once = asyncio.Event()

    @property
    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        try:
            return set(self._consumer.assignment())
        except IllegalStateError:
            return set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._kafka.aiokafka_options(),
            group_id=self._group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._batch_size,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, min(3000, self._session_timeout_ms // 3)),
            rebalance_timeout_ms=self._rebalance_timeout_ms,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            metadata_max_age_ms=30000,
        )

    async def run(self) -> None:
        """Consume until cancelled; the consumer leaves the group on the way out.

        Two batches overlap: while one is completing (Redis, then Kafka acknowledging), the next is fetched
        and derived -- CPU work that would otherwise wait for those round trips. Completion stays in order:
        a batch starts deleting only after the previous one completed and committed."""
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self._topic], listener=_Listener(self))
        await consumer.start()
        self.running = True
        completing: asyncio.Task[None] | None = None
        try:
            while True:
                batch = await consumer.getmany(
                    timeout_ms=self._batch_timeout_ms, max_records=self._batch_size
                )
                if completing is not None and (completing.done() or not batch):
                    await completing  # re-raises what the completion raised
                    completing = None
                if not batch:
                    continue
                records = [r for tp in sorted(batch) for r in batch[tp]]
                prepared = await self._handler.prepare(records)
                if completing is not None:
                    await completing
                ends = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
                completing = asyncio.create_task(self._complete(consumer, prepared, ends))
        finally:
            self.running = False
            try:
                if completing is not None and not completing.done():
                    # Not waited for: it may be retrying against a dead Redis; nothing of it is committed
                    # and the partitions' next owner redoes it (rule 3).
                    completing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await completing
                await consumer.stop()
            finally:
                self._consumer = None

    async def _complete(
        self, consumer: AIOKafkaConsumer, prepared: object, ends: dict[TopicPartition, int]
    ) -> None:
        await self._handler.complete(prepared)
        self._done.update(ends)
        await self.commit(consumer, set(ends))

    async def commit(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Commit what is done on ``partitions`` that are still ours (and not committed yet)."""
        assigned = self.assignment
        offsets = {
            tp: self._done[tp]
            for tp in partitions
            if tp in assigned and tp in self._done and self.committed.get(tp) != self._done[tp]
        }
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the partitions' next owners redo from their committed offsets.
            log.warning(
                "commit refused after a rebalance; the next owner redoes it", extra={"error": str(exc)}
            )
            return
        except KafkaError as exc:
            log.warning("commit failed; retried after the next batch", extra={"error": str(exc)})
            return
        self.committed.update(offsets)
        self._metrics.commits.inc()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None and revoked:
            await self.commit(consumer, revoked)
        for tp in revoked:
            self._done.pop(tp, None)
            self.committed.pop(tp, None)

    async def redo_recent(self, assigned: set[TopicPartition]) -> int:
        """The safety net: start each assigned partition at min(committed, the first offset of the last
        ``redo_window`` seconds). An invalidation older than the cache TTL cannot matter any more, so a
        window of TTL + margin makes any commit bug harmless, at the cost of redoing that much history on
        every assignment; the number of changes redone is returned (and counted in a metric)."""
        consumer = self._consumer
        if consumer is None or self._redo_window <= 0 or not assigned:
            return 0
        since_ms = int((time.time() - self._redo_window) * 1000)
        found = await consumer.offsets_for_times({tp: since_ms for tp in assigned})
        redone = 0
        for tp in assigned:
            start = found.get(tp)
            committed = await consumer.committed(tp)
            if start is None or committed is None or start.offset >= committed:
                continue
            consumer.seek(tp, start.offset)
            redone += committed - start.offset
        if redone:
            self._metrics.redone.inc(redone)
            log.info(
                "redoing recent changes on assignment",
                extra={"changes": redone, "window_s": self._redo_window},
            )
        return redone

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        count = sum(1 for tp in assigned if tp.topic == self._topic)
        self._metrics.assigned_partitions.set(count)
        log.info("partitions assigned", extra={"assigned_partitions": count, "topic": self._topic})
        self.assigned_once.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: AppointmentsConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.on_assigned(set(assigned))
        await self._owner.redo_recent(set(assigned))
