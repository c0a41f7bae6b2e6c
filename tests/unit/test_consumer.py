"""The appointments consumer's commit bookkeeping over a fake librdkafka consumer (the real one, with
rebalances and a stuck batch, is in tests/integration/test_worker_resilience.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.worker import consumer as consumer_module
from processor.worker.consumer import AppointmentsConsumer, KafkaRecord, _InFlight
from processor.worker.metrics import WorkerMetrics
from schemas.connections import KafkaConnection

TOPIC = "app.public.appointments"
#: What the worker would pass (explicit here: a component declares no defaults; the settings hold them).
OPTIONS: dict[str, Any] = {
    "batch_size": 2000,
    "batch_timeout": 0.005,
    "session_timeout": 30.0,
    "rebalance_timeout": 60.0,
    "fetch_max_wait_ms": 10,
    "client_id": "w",
    "redo_window": 0.0,
}


class FakeConsumer:
    """Records commits; ``refuse`` makes the next commit raise as the group coordinator would."""

    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []
        self.refuse: KafkaError | None = None
        self.assigned: list[TopicPartition] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False  # the batch's commit is done when it returns
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise KafkaException(error)
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        return offsets

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions


class _Handler:
    async def prepare(self, records: Any) -> Any: ...
    async def delete(self, batch: Any) -> Any: ...
    async def publish(self, batch: Any, result: Any) -> Any: ...


def _consumer() -> tuple[AppointmentsConsumer, FakeConsumer, WorkerMetrics]:
    metrics = WorkerMetrics()
    consumer = AppointmentsConsumer(
        kafka=KafkaConnection(), group="g", topic=TOPIC, handler=_Handler(), metrics=metrics, **OPTIONS
    )
    fake = FakeConsumer()

    class _Loop:
        def call_soon_threadsafe(self, fn: Any) -> None:
            fn()

    consumer._loop = _Loop()  # type: ignore[assignment]
    consumer._on_assign(fake, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    return consumer, fake, metrics


def test_a_record_reads_its_value_once_and_the_rest_from_the_message() -> None:
    message = confluent_kafka.Message(
        topic=TOPIC, partition=3, offset=41, key=b"k", value=b"{}", headers=[("h", b"v")]
    )
    record = KafkaRecord.of(message)
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        TOPIC,
        3,
        41,
        b"k",
        b"{}",
    )
    assert list(record.headers) == [("h", b"v")]


def test_a_handled_batch_commits_the_next_offset_of_each_of_its_partitions() -> None:
    consumer, fake, metrics = _consumer()
    consumer._commit_handled(fake, {(TOPIC, 0): 10, (TOPIC, 1): 7})
    assert fake.commits == [{(TOPIC, 0): 10, (TOPIC, 1): 7}]
    consumer._commit_handled(fake, {(TOPIC, 0): 10})  # nothing new: no commit
    assert len(fake.commits) == 1
    assert metrics.registry.get_sample_value("slotguard_commits_total") == 1


def test_a_batch_of_a_partition_revoked_meanwhile_is_not_committed() -> None:
    """Rule 3: the partition's next owner redoes it; this worker commits nothing for it any more."""
    consumer, fake, _ = _consumer()
    consumer._on_revoke(fake, [TopicPartition(TOPIC, 1)])
    consumer._commit_handled(fake, {(TOPIC, 0): 5, (TOPIC, 1): 9})
    assert fake.commits == [{(TOPIC, 0): 5}]


def test_revocation_commits_what_is_done_and_not_yet_committed() -> None:
    consumer, fake, _ = _consumer()
    fake.refuse = KafkaError(KafkaError.REQUEST_TIMED_OUT)
    consumer._commit_handled(fake, {(TOPIC, 0): 12})  # failed: retried later
    assert fake.commits == []
    consumer._on_revoke(fake, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    assert fake.commits == [{(TOPIC, 0): 12}]
    assert consumer.assignment == frozenset()


def test_a_commit_refused_after_a_rebalance_is_not_recorded_as_committed() -> None:
    consumer, fake, _ = _consumer()
    fake.refuse = KafkaError(KafkaError.ILLEGAL_GENERATION)
    consumer._commit_handled(fake, {(TOPIC, 0): 3})
    assert consumer.committed == {}
    consumer._commit_handled(fake, {(TOPIC, 0): 3})  # still owed: sent again with the next batch
    assert fake.commits == [{(TOPIC, 0): 3}]
    assert consumer.committed == {(TOPIC, 0): 3}


def test_the_consumer_prefetches_a_bounded_amount_and_never_commits_by_itself() -> None:
    consumer, _, _ = _consumer()
    config = consumer._config()
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["queued.max.messages.kbytes"] <= 16384
    assert config["fetch.queue.backoff.ms"] <= 10  # librdkafka's default (1 s) starved the worker


class _OrderedHandler(_Handler):
    """Logs each publish; one named in ``fail`` raises instead."""

    def __init__(self, log: list[tuple[str, object]], fail: str = "") -> None:
        self.log = log
        self.fail = fail

    async def publish(self, batch: Any, result: Any) -> Any:
        if batch == self.fail:
            raise RuntimeError(f"{batch} could not publish")
        self.log.append(("publish", batch))


async def _complete_two(
    handler: _OrderedHandler, fake: FakeConsumer
) -> tuple[AppointmentsConsumer, list[BaseException | None]]:
    """Complete batch b1 (offset 10) and then b2 (offset 20) as ``run`` chains them."""
    consumer = AppointmentsConsumer(
        kafka=KafkaConnection(), group="g", topic=TOPIC, handler=handler, metrics=WorkerMetrics(), **OPTIONS
    )
    consumer._loop = asyncio.get_running_loop()
    consumer._executor = ThreadPoolExecutor(1)
    consumer._on_assign(fake, [TopicPartition(TOPIC, 0)])
    first, second = _InFlight(), _InFlight()
    first.task = asyncio.create_task(consumer._complete(fake, "b1", {(TOPIC, 0): 10}, first, None))
    second.task = asyncio.create_task(consumer._complete(fake, "b2", {(TOPIC, 0): 20}, second, first))
    try:
        done = await asyncio.wait_for(
            asyncio.gather(first.task, second.task, return_exceptions=True), timeout=10
        )
    finally:
        consumer._executor.shutdown()
    return consumer, [d if isinstance(d, BaseException) else None for d in done]


def test_a_batch_publishes_while_the_previous_one_commits_and_commits_after_it() -> None:
    log: list[tuple[str, object]] = []
    published_second = threading.Event()

    class SlowCommits(FakeConsumer):
        def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
            if not self.commits:  # the first commit is still under way when the next batch publishes
                published_second.wait(5)
            log.append(("commit", offsets[0].offset))
            return super().commit(offsets=offsets, asynchronous=asynchronous)

    handler = _OrderedHandler(log)
    original = handler.publish

    async def publish(batch: Any, result: Any) -> Any:
        await original(batch, result)
        if batch == "b2":
            published_second.set()

    handler.publish = publish  # type: ignore[method-assign]
    _, errors = asyncio.run(_complete_two(handler, SlowCommits()))
    assert errors == [None, None]
    assert log == [("publish", "b1"), ("publish", "b2"), ("commit", 10), ("commit", 20)]


def test_a_batch_whose_previous_one_failed_to_publish_neither_publishes_nor_commits() -> None:
    log: list[tuple[str, object]] = []
    fake = FakeConsumer()
    consumer, errors = asyncio.run(_complete_two(_OrderedHandler(log, fail="b1"), fake))
    assert [str(e) for e in errors] == ["b1 could not publish", "b1 could not publish"]
    assert log == []
    assert fake.commits == []
    assert consumer.committed == {}


class _Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return b"{}"

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class _PollingConsumer(FakeConsumer):
    """Hands out one message on the third poll, then nothing; logs each poll's wait (``consume`` never
    has anything buffered)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.fourth_poll = threading.Event()

    def subscribe(self, topics: list[str], **_callbacks: Any) -> None: ...

    def consume(self, _count: int, _timeout: float) -> list[Any]:
        return []

    def poll(self, timeout: float) -> Any:
        self.waits.append(timeout)
        if len(self.waits) >= 4:
            self.fourth_poll.set()
        return _Message(7) if len(self.waits) == 3 else None

    def pause(self, _partitions: list[TopicPartition]) -> None: ...

    def resume(self, _partitions: list[TopicPartition]) -> None: ...

    def close(self) -> None: ...


def _run_until(fake: _PollingConsumer, handler: _Handler, until: Callable[[], Awaitable[object]]) -> None:
    """Run a consumer over ``fake`` with ``handler`` (batch timeout 5 ms) until ``until()`` returned, at
    most 10 s; then cancel it."""

    async def scenario() -> None:
        consumer = AppointmentsConsumer(
            kafka=KafkaConnection(), group="g", topic=TOPIC, handler=handler, metrics=WorkerMetrics(),
            consumer_factory=lambda _config: fake, **OPTIONS,
        )  # fmt: skip
        running = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(until(), timeout=10)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    asyncio.run(scenario())


def test_an_idle_consumer_waits_long_and_one_with_a_batch_in_flight_only_the_batch_timeout() -> None:
    fake = _PollingConsumer()
    deleting = asyncio.Event()

    class Stuck(_Handler):
        async def delete(self, batch: Any) -> Any:
            deleting.set()
            await asyncio.Event().wait()  # the batch stays in flight

    async def four_polls() -> None:
        await deleting.wait()
        assert await asyncio.to_thread(fake.fourth_poll.wait, 10), f"polls: {fake.waits}"

    _run_until(fake, Stuck(), four_polls)
    idle = consumer_module.IDLE_WAIT
    assert idle >= 0.05
    assert fake.waits[:2] == [idle, idle], "an idle consumer woke every batch timeout"
    assert fake.waits[3:4] == [0.005], "a batch in flight waited the idle wait for its commit"


def test_the_next_batch_is_fetched_while_this_one_is_derived() -> None:
    fake = _PollingConsumer()
    fetched_meanwhile: list[bool] = []
    derived = asyncio.Event()

    class Deriving(_Handler):
        async def prepare(self, records: Any) -> Any:
            # Returns only once the consumer thread polled again -- or after 5 s, then recording False.
            fetched_meanwhile.append(await asyncio.to_thread(fake.fourth_poll.wait, 5))
            derived.set()

        async def delete(self, batch: Any) -> Any:
            await asyncio.Event().wait()  # the batch stays in flight

    _run_until(fake, Deriving(), derived.wait)
    assert fetched_meanwhile == [True], f"no fetch while the batch was derived; polls: {fake.waits}"
    assert fake.waits[3] == 0.005, "the fetch behind a batch in flight waits only the batch timeout"
