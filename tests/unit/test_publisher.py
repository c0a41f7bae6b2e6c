"""The event publisher over librdkafka: flush() returns only when every record of the batch was
acknowledged, and a refused or unacknowledged record is a PublishFailed the policy retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from processor.worker.errors import PublishFailed
from processor.worker.publisher import KafkaPublisher
from schemas.connections import KafkaConnection


class _Error:
    def __init__(self, text: str) -> None:
        self.text = text

    def str(self) -> str:
        return self.text


class FakeProducer:
    """Queues produce() calls; poll() settles those the test lets through (``deliver`` decides: None =
    acknowledged, an error = refused and reported, False = not acknowledged yet) and ``len()`` counts the
    unsettled ones, as librdkafka does."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.report: Callable[[Any, Any], None] = config["on_delivery"]
        assert config["delivery.report.only.error"] is True
        assert config["socket.nagle.disable"] is True  # else small flushes wait ~40 ms (delayed ACKs)
        self.queue: list[tuple[str, bytes | None]] = []
        self.deliver: Callable[[str, bytes | None], _Error | bool | None] = lambda _t, _v: None

    def list_topics(self, timeout: float) -> None:
        return None

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        self.queue.append((topic, value))

    def __len__(self) -> int:
        return len(self.queue)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.queue)

    def poll(self, _timeout: float) -> int:
        kept = []
        for topic, value in self.queue:
            verdict = self.deliver(topic, value)
            if verdict is False:
                kept.append((topic, value))
            elif verdict is not None:
                self.report(verdict, None)
        settled = len(self.queue) - len(kept)
        self.queue = kept
        return settled


def _publisher() -> tuple[KafkaPublisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
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


def test_flush_returns_once_every_record_is_acknowledged() -> None:
    """Two sends, both acknowledged: flush returns and nothing is left owed."""
    publisher, fake = _publisher()

    async def go() -> None:
        await publisher.send("events", b"1", b"a", ())
        await publisher.send("events", b"2", b"b", ())
        await publisher.flush()

    asyncio.run(go())
    assert fake.queue == []


def test_a_refused_record_fails_the_flush_with_the_brokers_reason() -> None:
    """A record the broker refused makes flush raise PublishFailed naming the reason."""
    publisher, fake = _publisher()
    fake.deliver = lambda _t, v: _Error("Broker: Topic authorization failed") if v == b"b" else None

    async def go() -> None:
        await publisher.send("events", b"1", b"a", ())
        await publisher.send("events", b"2", b"b", ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match=r"1 record.*Topic authorization failed"):
        asyncio.run(go())


def test_a_record_left_unacknowledged_fails_each_flush_until_it_settles() -> None:
    """A record Kafka has not acknowledged fails the flush (and the next, while it stays in the queue):
    a batch is never reported done while anything sent is unsettled; once it settles, flushes pass."""
    publisher, fake = _publisher()
    fake.deliver = lambda _t, _v: False

    async def batch(value: bytes) -> None:
        await publisher.send("events", b"1", value, ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match="did not acknowledge 1 record"):
        asyncio.run(batch(b"first"))
    fake.deliver = lambda _t, v: False if v == b"first" else None
    with pytest.raises(PublishFailed, match="did not acknowledge 1 record"):
        asyncio.run(batch(b"retry"))
    fake.deliver = lambda _t, _v: None
    asyncio.run(batch(b"retry again"))


def test_a_refusal_is_reported_once() -> None:
    """A refused record fails its flush; the next batch is judged by what happens to its own records."""
    publisher, fake = _publisher()
    fake.deliver = lambda _t, v: _Error("Broker: Not enough replicas") if v == b"refused" else None

    async def batch(value: bytes) -> None:
        await publisher.send("events", b"1", value, ())
        await publisher.flush()

    with pytest.raises(PublishFailed, match="Not enough replicas"):
        asyncio.run(batch(b"refused"))
    asyncio.run(batch(b"fine"))


def test_sending_before_start_is_a_publish_failure() -> None:
    publisher = KafkaPublisher(
        KafkaConnection(), enable_idempotence=False, client_id="t", max_record_bytes=1_000_000
    )
    with pytest.raises(PublishFailed, match="not started"):
        asyncio.run(publisher.send("events", None, b"x", ()))


def test_flush_waits_for_acknowledgements_that_come_later() -> None:
    """A record acknowledged a few looks later: flush waits for it instead of failing the batch."""
    publisher, fake = _publisher()
    looks = 0

    def later(_t: str, _v: bytes | None) -> bool | None:
        nonlocal looks
        looks += 1
        return None if looks >= 5 else False

    fake.deliver = later

    async def go() -> None:
        await publisher.send("events", b"1", b"a", ())
        await publisher.flush()

    asyncio.run(go())
    assert fake.queue == []
    assert looks == 5
