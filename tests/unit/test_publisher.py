"""The event publisher over aiokafka: flush() returns only when every record of the batch was acknowledged,
and a refused or unacknowledged record is a PublishFailed the policy retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, NotEnoughReplicasError, TopicAuthorizationFailedError

from processor.worker.errors import PublishFailed
from processor.worker.publisher import KafkaPublisher
from schemas.connections import KafkaConnection

PARTITIONS = {0, 1, 2, 3}


class _Batch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.room = room

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """Records what was sent; ``deliver`` settles each send: None = acknowledged, an exception = refused,
    False = never acknowledged."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent: list[tuple[str, int | None, list[tuple[bytes | None, bytes | None]]]] = []
        self.deliver: Callable[[list[tuple[bytes | None, bytes | None]]], BaseException | bool | None] = (
            lambda _records: None
        )
        self.room = 100

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return PARTITIONS

    def create_batch(self) -> _Batch:
        return _Batch(self.room)

    def _future(self, records: list[tuple[bytes | None, bytes | None]]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        verdict = self.deliver(records)
        if isinstance(verdict, BaseException):
            future.set_exception(verdict)
        elif verdict is None:
            future.set_result(None)
        return future

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.sent.append((topic, partition, batch.records))
        return self._future(batch.records)

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append((topic, None, [(key, value)]))
        return self._future([(key, value)])


def _publisher(producer: type[FakeProducer] = FakeProducer) -> tuple[KafkaPublisher, FakeProducer]:
    """A started publisher over ``producer``, and the producer it made."""
    made: list[FakeProducer] = []

    def factory(**options: Any) -> FakeProducer:
        made.append(producer(**options))
        return made[-1]

    publisher = KafkaPublisher(
        KafkaConnection(),
        enable_idempotence=False,
        client_id="t",
        max_record_bytes=1_000_000,
        producer_factory=factory,
        ack_timeout=0.05,
    )
    asyncio.run(publisher.start())
    return publisher, made[0]


class _Event:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value


def test_the_producer_acknowledges_with_every_replica_and_batches_up_to_the_largest_record() -> None:
    _, fake = _publisher()
    assert fake.options["acks"] == "all"
    assert fake.options["max_request_size"] == 1_000_000
    assert fake.options["max_batch_size"] == 1_000_000, "a batch's events went out in 16 KB record batches"


def test_events_go_in_batches_one_per_partition_of_their_key_in_order() -> None:
    """send_many uses the batch API: the records of one key land in one partition, in the order sent."""
    publisher, fake = _publisher()
    events = [_Event(str(i % 5).encode(), f"v{i}".encode()) for i in range(20)]

    async def go() -> None:
        await publisher.send_many("events", events)
        await publisher.flush()

    asyncio.run(go())
    assert {topic for topic, _p, _r in fake.sent} == {"events"}
    by_key: dict[bytes | None, set[int | None]] = {}
    for _topic, partition, records in fake.sent:
        for key, _value in records:
            by_key.setdefault(key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in by_key.values())
    sent = [value for _t, _p, records in fake.sent for _k, value in records]
    assert sorted(v or b"" for v in sent) == sorted(e.value for e in events)
    for key in by_key:
        assert [v for _t, _p, r in fake.sent for k, v in r if k == key] == [
            e.value for e in events if e.key == key
        ]


def test_a_full_batch_is_submitted_and_the_next_one_started() -> None:
    publisher, fake = _publisher()
    fake.room = 3
    events = [_Event(b"same", f"v{i}".encode()) for i in range(7)]

    async def go() -> None:
        await publisher.send_many("events", events)
        await publisher.flush()

    asyncio.run(go())
    assert [len(records) for _t, _p, records in fake.sent] == [3, 3, 1]


def test_a_refused_record_fails_the_flush_with_the_brokers_reason() -> None:
    publisher, fake = _publisher()
    fake.deliver = lambda records: TopicAuthorizationFailedError() if (b"2", b"b") in records else None

    async def go() -> None:
        await publisher.send("events", b"1", b"a", ())
        await publisher.send("events", b"2", b"b", ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match=r"1 of 2 batch.*TopicAuthorizationFailedError"):
        asyncio.run(go())


def test_a_record_left_unacknowledged_fails_the_flush_in_time() -> None:
    publisher, fake = _publisher()
    fake.deliver = lambda _records: False

    async def go() -> None:
        await publisher.send("events", b"1", b"a", ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match="did not acknowledge 1 batch"):
        asyncio.run(go())


def test_a_refusal_is_reported_once() -> None:
    """A refused record fails its flush; the next batch is judged by what happens to its own records."""
    publisher, fake = _publisher()
    fake.deliver = lambda records: NotEnoughReplicasError() if (b"1", b"refused") in records else None

    async def batch(value: bytes) -> None:
        await publisher.send("events", b"1", value, ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match="NotEnoughReplicas"):
        asyncio.run(batch(b"refused"))
    asyncio.run(batch(b"fine"))


def test_sending_before_start_is_a_publish_failure() -> None:
    publisher = KafkaPublisher(
        KafkaConnection(), enable_idempotence=False, client_id="t", max_record_bytes=1_000_000
    )
    with pytest.raises(PublishFailed, match="not started"):
        asyncio.run(publisher.send("events", None, b"x", ()))


def test_a_broker_that_does_not_answer_at_start_is_a_publish_failure() -> None:
    class Unreachable(FakeProducer):
        async def start(self) -> None:
            raise KafkaConnectionError("Unable to bootstrap from [('nowhere', 9092)]")

    with pytest.raises(PublishFailed, match="cannot start the Kafka producer: KafkaConnectionError"):
        _publisher(Unreachable)
