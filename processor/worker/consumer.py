"""The appointments consumer: librdkafka batches in the worker's consumer group, manual commits.

Why not Faust's agent stream: its per-event machinery alone caps near 10k records/s on a 2-core machine,
and it acks generation-skipped events after a rebalance (docs/worker.md has the measurements). Why
librdkafka (``confluent-kafka``) and not aiokafka: draining a 4-partition topic and nothing else, aiokafka
spent 4.8-5.9 µs of the worker's one Python thread per record, librdkafka 2.1-2.7 µs in all threads, of
which 1.9 µs on the thread calling ``consume`` (with the GIL: librdkafka's messages becoming Python objects;
docs/worker.md). This consumer keeps the commit rules simple enough to state and test:

1. a batch is what is fetched (records of each partition in offset order), handed whole to the
   :class:`~processor.worker.handler.BatchHandler`: ``prepare`` derives it, ``delete`` returns once Redis
   acknowledged its UNLINK, ``publish`` once Kafka acknowledged its events and dead letters. Three batches
   overlap -- one being prepared, one deleting, one publishing -- while the next is being fetched, but
   each stage takes the batches in order: a batch deletes after the previous one deleted, publishes
   after the previous one published, and commits after the previous one committed;
2. only then is each partition's next offset (last record + 1) committed -- never past a record that was
   not fully handled, since a batch is handled completely or not at all;
3. commits go only to partitions still assigned; on revocation whatever is done but not yet committed is
   committed, and an in-flight batch is not waited for (it may be retrying against a dead Redis): its
   partitions' next owner redoes it. Redoing is harmless: ``UNLINK`` is idempotent, events carry ids.

One thread owns the librdkafka consumer: every call on it -- fetch, commit, pause, close, and the rebalance
callbacks librdkafka runs inside them -- happens on the consumer thread (a one-thread executor), so the
commit state needs no lock and a callback always sees it whole. librdkafka serves rebalances only inside
those calls, so a worker whose batch is stuck (Redis down, retrying) pauses its partitions and keeps
polling: the group rebalances around it instead of waiting for it (rule 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import confluent_kafka
import msgspec
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.worker.dlq import Record
from processor.worker.errors import KafkaUnreachable
from processor.worker.metrics import WorkerMetrics
from schemas.connections import KafkaConnection

log = logging.getLogger("slotguard.worker.consumer")

#: A partition, as the commit state keys it.
Partition = tuple[str, int]

T = TypeVar("T")

#: Commit refusals that mean the group moved on (a rebalance): the partitions' next owners redo the rest.
_REBALANCED = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._STATE,
    }
)

#: Seconds a completing batch may hold up the loop before the consumer pauses and keeps serving the group:
#: kept for batches that are really stuck, since librdkafka may discard what it prefetched for a paused
#: partition and fetch it again on resume.
STUCK_AFTER = 0.5
#: Seconds per poll while paused (the longest a rebalance waits for a stuck worker to answer).
SERVE_INTERVAL = 0.1
#: Seconds a fetch waits for a record while no batch is in flight. ``poll`` returns as soon as one arrives,
#: so this adds no latency; it bounds how often an idle worker wakes. Waking every batch timeout (5 ms)
#: instead cost an idle worker 0.13 of a core here: a round trip to the consumer thread each time. The
#: consumer thread is needed for nothing else meanwhile (rebalance callbacks run inside ``poll``); a stop
#: waits for this poll to return, as for a paused one (:data:`SERVE_INTERVAL`).
IDLE_WAIT = 0.1
#: Seconds the offset lookups of the redo window may take.
LOOKUP_TIMEOUT = 15.0


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


class KafkaRecord(msgspec.Struct, gc=False):
    """A consumed record as the handler reads it (a :class:`~processor.worker.dlq.Record`): the value is
    read once, the rest from librdkafka's message only when a dead letter or a log line needs it.

    Made by :meth:`of`. A struct the cycle collector does not track (it refers only to the message,
    which refers to nothing back): the worker holds one per change until its batch is committed, and a
    tracked one was walked by every young collection meanwhile."""

    _message: Any
    value: bytes | None

    @classmethod
    def of(cls, message: Any) -> KafkaRecord:
        return cls(message, message.value())

    @property
    def topic(self) -> str:
        return str(self._message.topic())

    @property
    def partition(self) -> int:
        return int(self._message.partition())

    @property
    def offset(self) -> int:
        return int(self._message.offset())

    @property
    def key(self) -> bytes | None:
        key: bytes | None = self._message.key()
        return key

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]:
        return self._message.headers() or ()


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
        consumer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Consumer,
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
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Touched on the consumer thread only:
        #: Next offset to read per partition, for everything handled (committed or not yet).
        self._done: dict[Partition, int] = {}
        #: What this worker last committed per partition.
        self.committed: dict[Partition, int] = {}
        #: Records fetched while paused (normally none): handed out first by the next fetch.
        self._carry: list[Any] = []
        self._paused = False
        #: The partitions assigned now (replaced whole, so other threads may read it).
        self._assignment: frozenset[Partition] = frozenset()
        self.running = False
        #: Set once the group assigned partitions to this worker for the first time.
        self.assigned_once = asyncio.Event()

    @property
    def assignment(self) -> frozenset[Partition]:
        return self._assignment

    def _config(self) -> dict[str, Any]:
        return {
            **self._kafka.librdkafka_options(),
            "group.id": self._group,
            "client.id": self._client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self._session_timeout_ms,
            "heartbeat.interval.ms": max(100, min(3000, self._session_timeout_ms // 3)),
            # librdkafka's JoinGroup rebalance timeout. The consumer polls at least every SERVE_INTERVAL,
            # stuck or not, so its other meaning (leave the group when not polled for that long) never trips.
            "max.poll.interval.ms": max(self._rebalance_timeout_ms, self._session_timeout_ms),
            "fetch.wait.max.ms": self._fetch_max_wait_ms,
            # Prefetch a few batches, not librdkafka's default of up to 64 MB (the worker's RSS budget).
            "queued.min.messages": 2 * self._batch_size,
            "queued.max.messages.kbytes": 16384,
            # ...and fetch again soon once below that: librdkafka's default waits up to a second.
            "fetch.queue.backoff.ms": 5,
            # What aiokafka's consumer (earlier workers) uses too: a rolling upgrade keeps a common protocol.
            "partition.assignment.strategy": "roundrobin",
            # Commits are small requests the next batch waits for: no Nagle delay on them.
            "socket.nagle.disable": True,
            "error_cb": self._client_error,
        }

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the consumer thread."""
        return await self._submit(fn, *args)

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn`` on the consumer thread (calls run one at a time, in the order queued)."""
        assert self._loop is not None
        assert self._executor is not None
        return self._loop.run_in_executor(self._executor, fn, *args)

    async def run(self) -> None:
        """Consume until cancelled; the consumer leaves the group on the way out.

        Batches overlap (rule 1): while one publishes (Kafka acknowledging) the next deletes (Redis) and the
        one after is fetched and derived -- CPU work that would otherwise wait for those round trips."""
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="slotguard-consumer")
        inflight: deque[_InFlight] = deque()
        consumer: Any = None
        fetching: asyncio.Future[list[Any]] | None = None
        try:
            consumer = await self._call(self._open)
            self.running = True
            while True:
                if fetching is None:
                    # Only a batch still completing needs the consumer thread back soon (for its commit).
                    wait = self._batch_timeout if inflight else IDLE_WAIT
                    fetching = self._submit(self._fetch, consumer, wait)
                messages = await fetching
                fetching = None
                while inflight and _task(inflight[0]).done():
                    await _task(inflight.popleft())  # re-raises what the completion raised
                if not messages:
                    if inflight:
                        await self._finish(consumer, _task(inflight.popleft()))
                    continue
                records: list[Record] = []
                ends: dict[Partition, int] = {}
                for message in messages:
                    if message.error() is not None:
                        self._message_error(message.error())
                        continue
                    records.append(KafkaRecord.of(message))
                    ends[(message.topic(), message.partition())] = message.offset() + 1
                if not records:
                    continue
                # The next fetch is queued on the consumer thread before this batch is derived, so it runs
                # while the loop derives -- between the commits the completing batches queue there. Fetched
                # only when the loop asked (after a batch was derived), a batch's records waited behind
                # those commits' round trips: the loop then waited ~25 % of a drain for fetches (docs/worker.md).
                fetching = self._submit(self._fetch, consumer, self._batch_timeout)
                prepared = await self._handler.prepare(records)
                if len(inflight) >= 2:
                    await self._finish(consumer, _task(inflight.popleft()))
                batch = _InFlight()
                previous = inflight[-1] if inflight else None
                batch.task = asyncio.create_task(self._complete(consumer, prepared, ends, batch, previous))
                inflight.append(batch)
        finally:
            self.running = False
            if fetching is not None:
                # Its records are not handled, so not committed: the partitions' next owner reads them.
                fetching.cancel()
            try:
                for batch in inflight:
                    # Not waited for: it may be retrying against a dead Redis; nothing of it is committed
                    # and the partitions' next owner redoes it (rule 3).
                    _task(batch).cancel()
                for batch in inflight:
                    with contextlib.suppress(asyncio.CancelledError):
                        await _task(batch)
                if consumer is not None:
                    await self._call(self._close, consumer)
            finally:
                self._executor.shutdown(wait=False)
                self._executor = None

    async def _finish(self, consumer: Any, completing: asyncio.Task[None]) -> None:
        """Wait for a completing batch. One that takes longer than :data:`STUCK_AFTER` is stuck: the
        partitions are paused and the consumer keeps serving the group until it is done."""
        await asyncio.wait({completing}, timeout=STUCK_AFTER)
        if not completing.done():
            await self._call(self._pause, consumer)
            try:
                while not completing.done():
                    await self._call(self._serve, consumer)
            finally:
                await self._call(self._resume, consumer)
        await completing

    async def _complete(
        self,
        consumer: Any,
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
                # After the previous batch's events, not after its commit: the commit is a round trip of
                # its own (~7 % of a batch's time on the publishing side), and commits keep their order
                # anyway -- this one is made after the previous one's, below.
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
        await self._call(self._commit_handled, consumer, ends)

    # --- on the consumer thread -------------------------------------------------------------------------

    def _open(self) -> Any:
        try:
            consumer = self._factory(self._config())
            consumer.subscribe(
                [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        except (KafkaException, ValueError) as exc:
            raise KafkaUnreachable(f"cannot start the appointments consumer: {_describe(exc)}") from None
        return consumer

    def _fetch(self, consumer: Any, wait: float) -> list[Any]:
        """Up to a batch of what librdkafka fetched already; waits up to ``wait`` seconds only when there
        is nothing, and returns as soon as something came (no latency added to a lone change)."""
        messages, self._carry = self._carry, []
        if len(messages) < self._batch_size:
            messages += consumer.consume(self._batch_size - len(messages), 0)
        if not messages:
            first = consumer.poll(wait)
            if first is None:
                return []
            messages = [first, *consumer.consume(self._batch_size - 1, 0)]
        return messages

    def _pause(self, consumer: Any) -> None:
        self._paused = True
        consumer.pause([TopicPartition(t, p) for t, p in self._assignment])

    def _serve(self, consumer: Any) -> None:
        # Paused, poll returns nothing but serves rebalances; a record fetched before the pause is kept.
        message = consumer.poll(SERVE_INTERVAL)
        if message is not None:
            self._carry.append(message)

    def _resume(self, consumer: Any) -> None:
        self._paused = False
        consumer.resume([TopicPartition(t, p) for t, p in self._assignment])

    def _close(self, consumer: Any) -> None:
        try:
            consumer.close()  # the revoke callback commits what is done, then the consumer leaves the group
        except (KafkaException, RuntimeError) as exc:
            log.warning("the appointments consumer did not close cleanly", extra={"error": _describe(exc)})

    def _commit_handled(self, consumer: Any, ends: dict[Partition, int]) -> None:
        assigned = self._assignment
        self._done.update({tp: offset for tp, offset in ends.items() if tp in assigned})
        self._commit(consumer, set(ends))

    def _commit(self, consumer: Any, partitions: set[Partition]) -> None:
        """Commit what is done on ``partitions`` that are still ours (and not committed yet)."""
        assigned = self._assignment
        offsets = {
            tp: self._done[tp]
            for tp in partitions
            if tp in assigned and tp in self._done and self.committed.get(tp) != self._done[tp]
        }
        if not offsets:
            return
        try:
            results = consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            self._commit_refused(exc.args[0] if exc.args else None, exc)
            return
        for result in results or ():
            if result.error is not None:
                offsets.pop((result.topic, result.partition), None)
                self._commit_refused(result.error, result.error)
        self.committed.update(offsets)
        if offsets:
            self._metrics.commits.inc()

    @staticmethod
    def _commit_refused(error: Any, exc: object) -> None:
        if isinstance(error, KafkaError) and error.code() in _REBALANCED:
            # The group moved on (rebalance): the partitions' next owners redo from their committed offsets.
            log.warning(
                "commit refused after a rebalance; the next owner redoes it", extra={"error": _describe(exc)}
            )
        else:
            log.warning("commit failed; retried after the next batch", extra={"error": _describe(exc)})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(consumer, revoked)
        self._forget(revoked)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked (the session expired): another member may own them already -- no commit.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        log.warning(
            "partitions lost; their next owner redoes what was not committed", extra={"lost": len(lost)}
        )
        self._forget(lost)

    def _forget(self, partitions: set[Partition]) -> None:
        for tp in partitions:
            self._done.pop(tp, None)
            self.committed.pop(tp, None)
        self._assignment = self._assignment - partitions
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) not in partitions]
        self._metrics.assigned_partitions.set(self._assigned_count())

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        starts = self._redo_starts(consumer, partitions)
        for tp in partitions:
            start = starts.get((tp.topic, tp.partition))
            if start is not None:
                tp.offset = start
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)  # a stuck worker takes no new records either
        self._assignment = self._assignment | assigned
        count = self._assigned_count()
        self._metrics.assigned_partitions.set(count)
        log.info("partitions assigned", extra={"assigned_partitions": count, "topic": self._topic})
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.assigned_once.set)

    def _assigned_count(self) -> int:
        return sum(1 for topic, _ in self._assignment if topic == self._topic)

    def _redo_starts(self, consumer: Any, partitions: list[TopicPartition]) -> dict[Partition, int]:
        """The safety net: start each assigned partition at min(committed, the first offset of the last
        ``redo_window`` seconds). An invalidation older than the cache TTL cannot matter any more, so a
        window of TTL + margin makes any commit bug harmless, at the cost of redoing that much history on
        every assignment; the changes redone are counted in a metric."""
        if self._redo_window <= 0 or not partitions:
            return {}
        since_ms = int((time.time() - self._redo_window) * 1000)
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, since_ms) for tp in partitions],
                timeout=LOOKUP_TIMEOUT,
            )
            committed = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=LOOKUP_TIMEOUT
            )
        except KafkaException as exc:
            raise KafkaUnreachable(f"cannot look up the redo window's offsets: {_describe(exc)}") from None
        done = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.error is None}
        starts: dict[Partition, int] = {}
        redone = 0
        for tp in found:
            key = (tp.topic, tp.partition)
            upto = done.get(key, -1)
            # -1: no record at or after that time; a negative committed offset: nothing committed yet.
            if tp.error is not None or tp.offset < 0 or upto < 0 or tp.offset >= upto:
                continue
            starts[key] = tp.offset
            redone += upto - tp.offset
        if redone:
            self._metrics.redone.inc(redone)
            log.info(
                "redoing recent changes on assignment",
                extra={"changes": redone, "window_s": self._redo_window},
            )
        return starts

    def _client_error(self, error: KafkaError) -> None:
        # librdkafka reports broker trouble here and retries by itself; the consumer carries on.
        log.warning("kafka client error", extra={"error": _describe(KafkaException(error))})

    @staticmethod
    def _message_error(error: KafkaError) -> None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("fetch error", extra={"error": _describe(KafkaException(error))})


def _describe(exc: object) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        exc = exc.args[0]
    if isinstance(exc, KafkaError):
        return f"{exc.name()}: {exc.str()}"
    return f"{type(exc).__name__}: {exc}"


def _task(batch: _InFlight) -> asyncio.Task[None]:
    assert batch.task is not None
    return batch.task
