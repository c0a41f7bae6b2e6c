"""The appointments consumer: aiokafka batches in the worker's consumer group, manual commits.

Why not Faust's agent stream: its per-event machinery alone caps near 10k records/s on a 2-core machine,
and it acks generation-skipped events after a rebalance (docs/worker.md). aiokafka -- the client Faust runs
on -- is used directly, the one Kafka client of slotguard's own code. This consumer keeps the commit rules
simple enough to state and test:

1. a batch is what ``getmany`` returns (records of each partition in offset order), handed whole to the
   :class:`~processor.worker.handler.BatchHandler`: ``prepare`` derives it, ``delete`` returns once Redis
   acknowledged its UNLINK, ``publish`` once Kafka acknowledged its events and dead letters. Three batches
   overlap -- one being prepared, one deleting, one publishing -- but each stage takes the batches in
   order: a batch deletes after the previous one deleted, publishes after the previous one published, and
   commits after the previous one committed;
2. only then is each partition's next offset (last record + 1) committed -- never past a record that was
   not fully handled, since a batch is handled completely or not at all;
3. commits go only to partitions still assigned; on revocation whatever is done but not yet committed is
   committed, and an in-flight batch is not waited for (it may be retrying against a dead Redis): its
   partitions' next owner redoes it. Redoing is harmless: ``UNLINK`` is idempotent, events carry ids.

aiokafka heartbeats and rebalances in background tasks, but takes a member that has not asked for records
for ``max_poll_interval_ms`` for dead. So a worker whose batch is stuck (Redis down, retrying) pauses its
partitions and keeps asking: the group rebalances around it instead of waiting for it (rule 3). Partitions
assigned meanwhile are paused too, and a record handed out while paused is given back (a seek to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from processor.worker.dlq import Record
from processor.worker.errors import KafkaUnreachable
from processor.worker.metrics import WorkerMetrics
from schemas.connections import KafkaConnection

log = logging.getLogger("slotguard.worker.consumer")

#: A partition, as the commit state keys it.
Partition = tuple[str, int]

#: Seconds a completing batch may hold up the loop before the consumer pauses and keeps serving the group.
STUCK_AFTER = 0.5
#: Seconds per fetch while paused (the consumer must keep asking for records to stay in the group).
SERVE_INTERVAL = 0.1
#: Seconds a fetch waits for a record while no batch is in flight. ``getmany`` returns as soon as one
#: arrives, so this adds no latency; it bounds how often an idle worker wakes.
IDLE_WAIT = 0.1


class Handler(Protocol):
    """What the consumer drives (:class:`~processor.worker.handler.BatchHandler`): ``prepare`` derives a
    batch, ``delete`` returns once its keys are gone, ``publish`` (given what ``delete`` returned) once its
    events are acknowledged."""

    async def prepare(self, records: Sequence[Record]) -> Any: ...

    async def delete(self, batch: Any) -> Any: ...

    async def publish(self, batch: Any, deleted: Any) -> object: ...


class _InFlight:
    """A batch past ``prepare``: the task deleting, publishing and committing it, when it deleted, and when
    (and whether) Kafka acknowledged its events."""

    __slots__ = ("deleted", "published", "published_ok", "task")

    def __init__(self) -> None:
        self.deleted = asyncio.Event()
        self.published = asyncio.Event()
        self.published_ok = False
        self.task: asyncio.Task[None] | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka calls these from its coordination task, between the group's generations."""

    def __init__(self, owner: AppointmentsConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.assigned({(tp.topic, tp.partition) for tp in assigned})


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
        batch_size: int,
        batch_timeout: float,
        session_timeout: float,
        rebalance_timeout: float,
        fetch_max_wait_ms: int,
        client_id: str,
        redo_window: float,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
    ) -> None:
        self._kafka = kafka
        self._group = group
        self._topic = topic
        self._handler = handler
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_timeout = max(0.001, batch_timeout)
        self._session_timeout_ms = int(session_timeout * 1000)
        self._rebalance_timeout_ms = int(rebalance_timeout * 1000)
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._client_id = client_id
        #: Seconds of history redone on every assignment (0: off) -- see :meth:`_redo_starts`.
        self._redo_window = redo_window
        self._factory = consumer_factory
        self._consumer: Any = None
        #: Next offset to read per partition, for everything handled (committed or not yet).
        self._done: dict[Partition, int] = {}
        #: What this worker last committed per partition.
        self.committed: dict[Partition, int] = {}
        #: The partitions assigned now.
        self._assignment: frozenset[Partition] = frozenset()
        self.running = False
        #: Set once the group assigned partitions to this worker for the first time.
        self.assigned_once = asyncio.Event()

    @property
    def assignment(self) -> frozenset[Partition]:
        return self._assignment

    def options(self) -> dict[str, Any]:
        """The aiokafka consumer's keyword arguments."""
        return {
            **self._kafka.aiokafka_options(),
            "group_id": self._group,
            "client_id": self._client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": self._session_timeout_ms,
            "heartbeat_interval_ms": max(100, min(3000, self._session_timeout_ms // 3)),
            "rebalance_timeout_ms": self._rebalance_timeout_ms,
            # The consumer asks at least every SERVE_INTERVAL, stuck or not, so this never trips by itself.
            "max_poll_interval_ms": max(self._rebalance_timeout_ms, self._session_timeout_ms),
            "max_poll_records": self._batch_size,
            "fetch_max_wait_ms": self._fetch_max_wait_ms,
            # Round robin, as earlier workers: a rolling upgrade keeps a common protocol.
            "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
        }

    async def run(self) -> None:
        """Consume until cancelled; the consumer leaves the group on the way out.

        Batches overlap (rule 1): while one publishes (Kafka acknowledging) the next deletes (Redis) and the
        one after is fetched and derived -- CPU work that would otherwise wait for those round trips."""
        inflight: deque[_InFlight] = deque()
        consumer: Any = None
        try:
            consumer = self._consumer = self._factory(**self.options())
            consumer.subscribe([self._topic], listener=_Rebalance(self))
            try:
                await consumer.start()
            except KafkaError as exc:
                raise KafkaUnreachable(f"cannot start the appointments consumer: {_describe(exc)}") from None
            self.running = True
            while True:
                # Only a batch still completing needs the loop back soon (for its commit).
                wait = self._batch_timeout if inflight else IDLE_WAIT
                fetched = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=self._batch_size)
                while inflight and _task(inflight[0]).done():
                    await _task(inflight.popleft())  # re-raises what the completion raised
                records: list[Record] = []
                ends: dict[Partition, int] = {}
                for tp, messages in fetched.items():
                    if messages:
                        records += messages
                        ends[(tp.topic, tp.partition)] = messages[-1].offset + 1
                if not records:
                    if inflight:
                        await self._finish(consumer, _task(inflight.popleft()))
                    continue
                prepared = await self._handler.prepare(records)
                if len(inflight) >= 2:
                    await self._finish(consumer, _task(inflight.popleft()))
                batch = _InFlight()
                previous = inflight[-1] if inflight else None
                batch.task = asyncio.create_task(self._complete(prepared, ends, batch, previous))
                inflight.append(batch)
        finally:
            self.running = False
            for batch in inflight:
                # Not waited for: it may be retrying against a dead Redis; nothing of it is committed and the
                # partitions' next owner redoes it (rule 3).
                _task(batch).cancel()
            for batch in inflight:
                with contextlib.suppress(asyncio.CancelledError):
                    await _task(batch)
            if consumer is not None:
                try:
                    await consumer.stop()  # the revoke callback commits what is done; then it leaves
                except KafkaError as exc:
                    log.warning(
                        "the appointments consumer did not close cleanly", extra={"error": _describe(exc)}
                    )
            self._consumer = None

    async def _finish(self, consumer: Any, completing: asyncio.Task[None]) -> None:
        """Wait for a completing batch. One that takes longer than :data:`STUCK_AFTER` is stuck: the
        partitions are paused and the consumer keeps asking for records (none come) until it is done."""
        await asyncio.wait({completing}, timeout=STUCK_AFTER)
        if not completing.done():
            try:
                while not completing.done():
                    # Paused again each time: a rebalance meanwhile may have assigned new partitions.
                    consumer.pause(*consumer.assignment())
                    fetched = await consumer.getmany(timeout_ms=int(SERVE_INTERVAL * 1000))
                    for tp, records in fetched.items():
                        # Fetched before its pause: given back, so the next batch reads it (skipping it
                        # here and committing past it later would lose its invalidation).
                        if records:
                            consumer.seek(tp, records[0].offset)
            finally:
                consumer.resume(*consumer.assignment())
        await completing

    async def _complete(
        self,
        prepared: object,
        ends: dict[Partition, int],
        batch: _InFlight,
        previous: _InFlight | None,
    ) -> None:
        try:
            if previous is not None:
                await previous.deleted.wait()
            deleted = await self._handler.delete(prepared)
        finally:
            # Also when the delete failed: the next batch may delete (harmless), but it will not publish or
            # commit -- it waits for this task, which re-raises.
            batch.deleted.set()
        try:
            if previous is not None:
                # After the previous batch's events, not after its commit: commits keep their order anyway --
                # this one is made after the previous one's, below.
                await previous.published.wait()
                if not previous.published_ok:
                    await _task(previous)  # re-raises why it did not publish
                    raise RuntimeError("the previous batch did not publish")  # pragma: no cover
            await self._handler.publish(prepared, deleted)
            batch.published_ok = True
        finally:
            batch.published.set()
        if previous is not None:
            await _task(previous)  # its commit, or why it failed (then this batch is not committed)
        assigned = self._assignment
        self._done.update({tp: offset for tp, offset in ends.items() if tp in assigned})
        await self._commit(set(ends))

    async def _commit(self, partitions: set[Partition]) -> None:
        """Commit what is done on ``partitions`` that are still ours (and not committed yet)."""
        assigned = self._assignment
        offsets = {
            tp: self._done[tp]
            for tp in partitions
            if tp in assigned and tp in self._done and self.committed.get(tp) != self._done[tp]
        }
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance): the partitions' next owners redo from their committed offsets.
            log.warning(
                "commit refused after a rebalance; the next owner redoes it", extra={"error": _describe(exc)}
            )
            return
        except KafkaError as exc:
            log.warning("commit failed; retried after the next batch", extra={"error": _describe(exc)})
            return
        self.committed.update(offsets)
        self._metrics.commits.inc()

    # --- the group's callbacks (aiokafka's coordination task) ----------------------------------------------

    async def revoked(self, partitions: set[Partition]) -> None:
        """Commit what is done on the revoked partitions, then forget them."""
        await self._commit(partitions)
        for tp in partitions:
            self._done.pop(tp, None)
            self.committed.pop(tp, None)
        self._assignment = self._assignment - partitions
        self._metrics.assigned_partitions.set(self._assigned_count())

    async def assigned(self, partitions: set[Partition]) -> None:
        starts = await self._redo_starts(partitions)
        for (topic, partition), start in starts.items():
            self._consumer.seek(TopicPartition(topic, partition), start)
        self._assignment = frozenset(partitions)
        count = self._assigned_count()
        self._metrics.assigned_partitions.set(count)
        log.info("partitions assigned", extra={"assigned_partitions": count, "topic": self._topic})
        self.assigned_once.set()

    def _assigned_count(self) -> int:
        return sum(1 for topic, _ in self._assignment if topic == self._topic)

    async def _redo_starts(self, partitions: set[Partition]) -> dict[Partition, int]:
        """The safety net: start each assigned partition at min(committed, the first offset of the last
        ``redo_window`` seconds). An invalidation older than the cache TTL cannot matter any more, so a
        window of TTL + margin makes any commit bug harmless, at the cost of redoing that much history on
        every assignment; the changes redone are counted in a metric."""
        consumer = self._consumer
        if self._redo_window <= 0 or not partitions or consumer is None:
            return {}
        since_ms = int((time.time() - self._redo_window) * 1000)
        tps = [TopicPartition(t, p) for t, p in partitions]
        try:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            committed = {tp: await consumer.committed(tp) for tp in tps}
        except KafkaError as exc:
            raise KafkaUnreachable(f"cannot look up the redo window's offsets: {_describe(exc)}") from None
        starts: dict[Partition, int] = {}
        redone = 0
        for tp in tps:
            at, upto = found.get(tp), committed.get(tp)
            # None: no record at or after that time, or nothing committed yet.
            if at is None or upto is None or upto < 0 or at.offset >= upto:
                continue
            starts[(tp.topic, tp.partition)] = at.offset
            redone += upto - at.offset
        if redone:
            self._metrics.redone.inc(redone)
            log.info(
                "redoing recent changes on assignment",
                extra={"changes": redone, "window_s": self._redo_window},
            )
        return starts


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _task(batch: _InFlight) -> asyncio.Task[None]:
    assert batch.task is not None
    return batch.task
