"""The appointments consumer's commit bookkeeping over a fake aiokafka consumer (the real one, with
rebalances and a stuck batch, is in tests/integration/test_worker_resilience.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, RequestTimedOutError
from aiokafka.structs import ConsumerRecord

from processor.worker import consumer as consumer_module
from processor.worker.consumer import AppointmentsConsumer, _InFlight
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


def _record(offset: int, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, b"k", b"{}", None, 2, 2, [])


class FakeConsumer:
    """Records commits, pauses and fetch waits; ``refuse`` makes the next commit raise as the group
    coordinator would; ``batches`` are handed out by successive fetches (then nothing)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.commits: list[dict[tuple[str, int], int]] = []
        self.refuse: BaseException | None = None
        self.batches: list[list[ConsumerRecord[bytes, bytes]]] = []
        self.waits: list[int] = []
        self.paused: list[TopicPartition] = []
        #: Every pause, in order (``paused`` is what is paused now).
        self.pauses: list[list[TopicPartition]] = []
        self.fetched = asyncio.Event()
        self.listener: Any = None
        self.assigned = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
        #: Records the broker had fetched already: handed out by the next fetch, paused or not.
        self.prefetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []

    def subscribe(self, topics: list[str], *, listener: Any) -> None:
        self.listener = listener

    async def start(self) -> None:
        await self.listener.on_partitions_assigned(set(self.assigned))

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def stop(self) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error
        self.commits.append({(tp.topic, tp.partition): o for tp, o in offsets.items()})

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.waits.append(timeout_ms)
        self.fetched.set()
        await asyncio.sleep(0)
        if self.prefetched:
            prefetched, self.prefetched = self.prefetched, {}
            return prefetched
        if self.batches and not self.paused:
            records = self.batches.pop(0)
            return {TopicPartition(TOPIC, records[0].partition): records}
        return {}

    def pause(self, *partitions: TopicPartition) -> None:
        if set(partitions) != set(self.paused):
            self.pauses.append(list(partitions))
        self.paused = list(partitions)

    async def fetches(self, condition: Callable[[], bool]) -> None:
        """Until ``condition()`` holds, checked after each fetch."""
        while not condition():
            self.fetched.clear()
            await self.fetched.wait()

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused = []


class _Handler:
    async def prepare(self, records: Any) -> Any:
        return records

    async def delete(self, batch: Any) -> Any: ...

    async def publish(self, batch: Any, result: Any) -> Any: ...


def _consumer(handler: Any = None) -> tuple[AppointmentsConsumer, FakeConsumer, WorkerMetrics]:
    metrics = WorkerMetrics()
    made: list[FakeConsumer] = []

    def factory(**options: Any) -> FakeConsumer:
        made.append(FakeConsumer(**options))
        return made[-1]

    consumer = AppointmentsConsumer(
        kafka=KafkaConnection(),
        group="g",
        topic=TOPIC,
        handler=handler or _Handler(),
        metrics=metrics,
        consumer_factory=factory,
        **OPTIONS,
    )
    fake = factory(**consumer.options())
    consumer._consumer = fake
    asyncio.run(consumer.assigned({(TOPIC, 0), (TOPIC, 1)}))
    return consumer, fake, metrics


def _handled(consumer: AppointmentsConsumer, ends: dict[tuple[str, int], int]) -> None:
    asyncio.run(consumer._complete("b", ends, _InFlight(), None))


def test_a_handled_batch_commits_the_next_offset_of_each_of_its_partitions() -> None:
    consumer, fake, metrics = _consumer()
    _handled(consumer, {(TOPIC, 0): 10, (TOPIC, 1): 7})
    assert fake.commits == [{(TOPIC, 0): 10, (TOPIC, 1): 7}]
    _handled(consumer, {(TOPIC, 0): 10})  # nothing new: no commit
    assert len(fake.commits) == 1
    assert metrics.registry.get_sample_value("slotguard_commits_total") == 1


def test_a_batch_of_a_partition_revoked_meanwhile_is_not_committed() -> None:
    """Rule 3: the partition's next owner redoes it; this worker commits nothing for it any more."""
    consumer, fake, _ = _consumer()
    asyncio.run(consumer.revoked({(TOPIC, 1)}))
    _handled(consumer, {(TOPIC, 0): 5, (TOPIC, 1): 9})
    assert fake.commits == [{(TOPIC, 0): 5}]


def test_revocation_commits_what_is_done_and_not_yet_committed() -> None:
    consumer, fake, _ = _consumer()
    fake.refuse = RequestTimedOutError()
    _handled(consumer, {(TOPIC, 0): 12})  # failed: retried later
    assert fake.commits == []
    asyncio.run(consumer.revoked({(TOPIC, 0), (TOPIC, 1)}))
    assert fake.commits == [{(TOPIC, 0): 12}]
    assert consumer.assignment == frozenset()


def test_a_commit_refused_after_a_rebalance_is_not_recorded_as_committed() -> None:
    consumer, fake, _ = _consumer()
    fake.refuse = CommitFailedError("the group rebalanced")
    _handled(consumer, {(TOPIC, 0): 3})
    assert consumer.committed == {}
    _handled(consumer, {(TOPIC, 0): 3})  # still owed: sent again with the next batch
    assert fake.commits == [{(TOPIC, 0): 3}]
    assert consumer.committed == {(TOPIC, 0): 3}


def test_the_consumer_never_commits_by_itself_and_fetches_at_most_a_batch() -> None:
    consumer, _, _ = _consumer()
    options = consumer.options()
    assert options["enable_auto_commit"] is False
    assert options["max_poll_records"] == OPTIONS["batch_size"]
    assert options["group_id"] == "g"


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
    consumer: AppointmentsConsumer,
) -> list[BaseException | None]:
    """Complete batch b1 (offset 10) and then b2 (offset 20) as ``run`` chains them."""
    first, second = _InFlight(), _InFlight()
    first.task = asyncio.create_task(consumer._complete("b1", {(TOPIC, 0): 10}, first, None))
    second.task = asyncio.create_task(consumer._complete("b2", {(TOPIC, 0): 20}, second, first))
    done = await asyncio.wait_for(asyncio.gather(first.task, second.task, return_exceptions=True), timeout=10)
    return [d if isinstance(d, BaseException) else None for d in done]


def test_a_batch_publishes_while_the_previous_one_commits_and_commits_after_it() -> None:
    log: list[tuple[str, object]] = []
    handler = _OrderedHandler(log)
    consumer, fake, _ = _consumer(handler)

    async def go() -> list[BaseException | None]:
        published_second = asyncio.Event()
        original_publish, original_commit = handler.publish, fake.commit

        async def publish(batch: Any, result: Any) -> Any:
            await original_publish(batch, result)
            if batch == "b2":
                published_second.set()

        async def commit(offsets: dict[TopicPartition, int]) -> None:
            if not fake.commits:  # the first commit is still under way when the next batch publishes
                await asyncio.wait_for(published_second.wait(), 5)
            log.append(("commit", next(iter(offsets.values()))))
            await original_commit(offsets)

        handler.publish = publish  # type: ignore[method-assign]
        fake.commit = commit  # type: ignore[method-assign]
        return await _complete_two(consumer)

    assert asyncio.run(go()) == [None, None]
    assert log == [("publish", "b1"), ("publish", "b2"), ("commit", 10), ("commit", 20)]


def test_a_batch_whose_previous_one_failed_to_publish_neither_publishes_nor_commits() -> None:
    log: list[tuple[str, object]] = []
    consumer, fake, _ = _consumer(_OrderedHandler(log, fail="b1"))
    errors = asyncio.run(_complete_two(consumer))
    assert [str(e) for e in errors] == ["b1 could not publish", "b1 could not publish"]
    assert log == []
    assert fake.commits == []
    assert consumer.committed == {}


def _run_until(
    handler: Any, batches: list[list[Any]], until: Callable[[FakeConsumer], Awaitable[object]]
) -> FakeConsumer:
    """Run a consumer over a fake handing out ``batches`` until ``until(fake)`` returned (at most 10 s)."""
    made: list[FakeConsumer] = []
    created = asyncio.Event()

    def factory(**options: Any) -> FakeConsumer:
        made.append(FakeConsumer(**options))
        made[-1].batches = batches
        created.set()
        return made[-1]

    async def scenario() -> None:
        consumer = AppointmentsConsumer(
            kafka=KafkaConnection(), group="g", topic=TOPIC, handler=handler, metrics=WorkerMetrics(),
            consumer_factory=factory, **OPTIONS,
        )  # fmt: skip
        running = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(created.wait(), timeout=10)
            await asyncio.wait_for(until(made[0]), timeout=10)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    asyncio.run(scenario())
    return made[0]


def test_an_idle_consumer_waits_long_and_one_with_a_batch_in_flight_only_the_batch_timeout() -> None:
    deleting = asyncio.Event()

    class Stuck(_Handler):
        async def delete(self, batch: Any) -> Any:
            deleting.set()
            await asyncio.Event().wait()  # the batch stays in flight

    async def fetched_after_the_batch(fake: FakeConsumer) -> None:
        await deleting.wait()
        await fake.fetches(lambda: len(fake.waits) >= 2)

    idle = consumer_module.IDLE_WAIT
    fake = _run_until(Stuck(), [[_record(7)]], fetched_after_the_batch)
    assert idle >= 0.05
    assert fake.waits[0] == int(idle * 1000), "an idle consumer woke every batch timeout"
    assert fake.waits[1] == 5, "a batch in flight waited the idle wait for its commit"


def test_a_stuck_batch_pauses_the_partitions_and_keeps_asking_for_records() -> None:
    """aiokafka drops a member that stops asking: a batch stuck on Redis must not stop the asking."""

    class Stuck(_Handler):
        async def delete(self, batch: Any) -> Any:
            await asyncio.Event().wait()

    async def served_while_paused(fake: FakeConsumer) -> None:
        await fake.fetches(lambda: bool(fake.paused) and len(fake.waits) >= 5)

    fake = _run_until(Stuck(), [[_record(7)]], served_while_paused)
    assert [{(tp.topic, tp.partition) for tp in p} for p in fake.pauses] == [{(TOPIC, 0), (TOPIC, 1)}]
    assert int(consumer_module.SERVE_INTERVAL * 1000) in fake.waits[2:]


def test_a_record_handed_out_while_paused_is_given_back_not_skipped() -> None:
    """A partition assigned while a batch is stuck may hand out what was fetched already: skipping it
    and later committing past it would lose its invalidation, so the consumer seeks back to it."""
    newcomer = TopicPartition(TOPIC, 2)

    class Stuck(_Handler):
        async def delete(self, batch: Any) -> Any:
            await asyncio.Event().wait()

    async def given_back(fake: FakeConsumer) -> None:
        await fake.fetches(lambda: bool(fake.paused))
        fake.assigned.add(newcomer)
        fake.prefetched = {newcomer: [_record(40, partition=2), _record(41, partition=2)]}
        await fake.fetches(lambda: bool(fake.seeks) and newcomer in fake.paused)

    fake = _run_until(Stuck(), [[_record(7)]], given_back)
    assert fake.seeks == [(newcomer, 40)]
    assert newcomer in fake.pauses[-1], "a partition assigned while stuck was not paused"
