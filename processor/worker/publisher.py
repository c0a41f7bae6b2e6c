"""Publishing derived events and dead letters: librdkafka (``confluent-kafka``), acks=all, errors wrapped.

Why librdkafka and not aiokafka's producer: aiokafka spent ~11 µs of the worker's one Python thread per
record (partitioning, record building, a future per record); librdkafka does that in C on its own threads,
~2.7 µs per record in all (docs/bench.md). :meth:`KafkaPublisher.send` enqueues a record;
:meth:`KafkaPublisher.flush` returns once the broker acknowledged every record sent since the last flush,
and raises :class:`~processor.worker.errors.PublishFailed` -- which the failure policy retries -- when one
was refused or not acknowledged in time. Every client error surfaces as ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import confluent_kafka
from aiokafka.errors import KafkaError

from processor.worker.errors import PublishFailed
from schemas.connections import KafkaConnection

Headers = Sequence[tuple[str, bytes]]

#: Seconds a record may wait for its acknowledgement before the batch counts as failed (and is retried).
DELIVERY_TIMEOUT = 15.0
#: Seconds between two looks at librdkafka's queue while :meth:`KafkaPublisher.flush` waits.
ACK_POLL_INTERVAL = 0.001


class Keyed(Protocol):
    """A record to publish without headers: the core's :class:`~processor.core.outcome.EventRecord`."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Publisher(Protocol):
    """Sends records; :meth:`flush` returns once every record sent so far is acknowledged."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None: ...

    async def send_many(self, topic: str, records: Iterable[Keyed]) -> None:
        """Send records without headers, in order (one await for all of them). The records themselves,
        not ``(key, value)`` pairs: a pair per event was one more object per change for the cycle
        collector to walk while the batch waited for its acknowledgements."""
        ...

    async def flush(self) -> None: ...


class KafkaPublisher:
    """:class:`Publisher` over one librdkafka producer.

    Delivery reports come only for failures (``delivery.report.only.error``; a callback per record cost
    four times the ``produce`` call itself): :meth:`flush` waits until librdkafka's queue is empty, then
    fails if a record was refused since the last flush or one is still unacknowledged. A refusal of an
    earlier, already failed batch's leftover copy fails the current flush too -- it is then retried, which
    at-least-once delivery allows (consumers dedupe by ``event_id``)."""

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        enable_idempotence: bool,
        client_id: str,
        max_record_bytes: int,
        producer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Producer,
        ack_timeout: float = DELIVERY_TIMEOUT + 5,
    ) -> None:
        self._kafka = kafka
        self._ack_timeout = ack_timeout
        self._enable_idempotence = enable_idempotence
        self._client_id = client_id
        self._max_record_bytes = max_record_bytes
        self._factory = producer_factory
        self._producer: Any = None
        self._sent = 0
        self._failures: list[str] = []

    def _failed(self, err: Any, _msg: Any) -> None:
        # librdkafka calls this from flush()/poll(), on the thread that called them, for failures only.
        if err is not None:
            self._failures.append(err.str())

    async def start(self) -> None:
        """Create the producer and check the cluster answers (its metadata), so a wrong address or refused
        credentials fail here, named, and the policy retries."""
        config = {
            **self._kafka.librdkafka_options(),
            "client.id": self._client_id,
            "acks": "all",
            # The largest record the worker makes (dead letters are cut to fit: processor/worker/dlq.py).
            "message.max.bytes": self._max_record_bytes,
            "enable.idempotence": self._enable_idempotence,
            # flush() sends at once; the linger only groups the records of one batch into few requests.
            "linger.ms": 2,
            # librdkafka leaves Nagle on by default: a batch's few small records then waited ~40 ms for the
            # kernel (delayed ACKs) -- the next batch's UNLINK waits for this flush.
            "socket.nagle.disable": True,
            "message.timeout.ms": int(DELIVERY_TIMEOUT * 1000),
            "socket.timeout.ms": int(DELIVERY_TIMEOUT * 1000),
            "delivery.report.only.error": True,
            "on_delivery": self._failed,
        }
        try:
            producer = self._factory(config)
            await asyncio.to_thread(producer.list_topics, timeout=DELIVERY_TIMEOUT)
        except (confluent_kafka.KafkaException, ValueError) as exc:
            raise PublishFailed(f"cannot start the Kafka producer: {_describe(exc)}") from None
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, DELIVERY_TIMEOUT)

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        producer = self._producer
        if producer is None:
            raise PublishFailed(f"could not publish to {topic}: the producer is not started")
        while True:
            try:
                producer.produce(topic, value, key, headers=list(headers) or None)
                break
            except BufferError:
                # The local queue is full: wait for acknowledgements to make room (bounded memory).
                await asyncio.to_thread(producer.poll, 0.1)
            except confluent_kafka.KafkaException as exc:
                raise PublishFailed(f"could not publish to {topic}: {_describe(exc)}") from None
        self._sent += 1

    async def send_many(self, topic: str, records: Iterable[Keyed]) -> None:
        # The worker's events: one produce() call each and no await between them (an await per record
        # cost as much as the produce itself).
        producer = self._producer
        if producer is None:
            raise PublishFailed(f"could not publish to {topic}: the producer is not started")
        produce = producer.produce
        sent = 0
        try:
            for record in records:
                while True:
                    try:
                        produce(topic, record.value, record.key)
                        break
                    except BufferError:
                        await asyncio.to_thread(producer.poll, 0.1)  # queue full: make room
                sent += 1
        except confluent_kafka.KafkaException as exc:
            raise PublishFailed(f"could not publish to {topic}: {_describe(exc)}") from None
        finally:
            self._sent += sent

    async def flush(self) -> None:
        sent, self._sent = self._sent, 0
        producer = self._producer
        if producer is None:
            if sent:
                raise PublishFailed("the producer stopped before Kafka acknowledged every record")
            return
        remaining = await self._acknowledged(producer) if sent else 0
        failures, self._failures = self._failures, []
        if failures:
            raise PublishFailed(f"Kafka did not acknowledge {len(failures)} record(s): {failures[0]}")
        if remaining:
            raise PublishFailed(
                f"Kafka did not acknowledge {remaining} record(s) within {DELIVERY_TIMEOUT:.0f}s"
            )

    async def _acknowledged(self, producer: Any) -> int:
        """Wait until librdkafka's queue is empty -- every record acknowledged, or refused and reported --
        or the time is up; the number of records still unsettled.

        Looked at from the event loop every millisecond rather than ``flush()`` on a thread: the thread's
        return waited for the GIL and for the loop to finish whatever it was running (the next batch being
        derived), so the worker's publishing side -- the slower of its two -- waited ~20 ms a batch for an
        acknowledgement that took a fraction of that (drains, 6 interleaved rounds, batches derived in slices of
        250: 50,710/s with flush() on a thread, 55,524/s polled)."""
        deadline = time.monotonic() + self._ack_timeout
        while True:
            producer.poll(0)  # serves the failure callbacks
            remaining = len(producer)
            if not remaining or time.monotonic() >= deadline:
                return remaining
            await asyncio.sleep(ACK_POLL_INTERVAL)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, confluent_kafka.KafkaException) and exc.args:
        error = exc.args[0]
        if isinstance(error, confluent_kafka.KafkaError):
            return f"{error.name()}: {error.str()}"
    return f"{type(exc).__name__}: {exc}"


async def declare_topics(kafka: KafkaConnection, names: Sequence[str], partitions: int = 1) -> list[str]:
    """Create those of ``names`` that do not exist; the ones created. Replication: min(3, brokers), what a
    production cluster wants and a one-broker dev cluster can have (``slotguard topics apply`` sets it
    explicitly from topics.yaml)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**kafka.aiokafka_options(), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            cluster = await admin.describe_cluster()
            replicas = max(1, min(3, len(cluster.get("brokers", ()))))
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                await admin.create_topics([NewTopic(n, partitions, replicas) for n in missing])
        return missing
    except KafkaError as exc:
        raise PublishFailed(f"cannot declare topics {', '.join(names)}: {type(exc).__name__}: {exc}") from exc
    finally:
        await admin.close()
