"""Publishing derived events and dead letters: aiokafka's producer, acks=all, errors wrapped.

:meth:`KafkaPublisher.send_many` puts a batch's events into aiokafka's batch builders, one per partition
(the key's murmur2 partition, as every Kafka client picks it), and submits each with ``send_batch``:
0.35 µs a record against 6.1 µs for ``send()`` (a future per record) on the development machine.
:meth:`KafkaPublisher.send` sends a dead letter with its headers. :meth:`KafkaPublisher.flush` returns
once the broker acknowledged every record sent since the last flush, and raises
:class:`~processor.worker.errors.PublishFailed` -- which the failure policy retries -- when one was refused
or not acknowledged in time. Every client error surfaces as ``PublishFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from processor.worker.errors import PublishFailed
from schemas.connections import KafkaConnection

Headers = Sequence[tuple[str, bytes]]

#: Seconds a flush may wait for the broker's acknowledgements before the batch counts as failed (retried).
DELIVERY_TIMEOUT = 15.0

_partition_of = DefaultPartitioner()


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
        """Send records without headers, in order (one await for all of them)."""
        ...

    async def flush(self) -> None: ...


class KafkaPublisher:
    """:class:`Publisher` over one aiokafka producer."""

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        enable_idempotence: bool,
        client_id: str,
        max_record_bytes: int,
        producer_factory: Callable[..., Any] = AIOKafkaProducer,
        ack_timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        self._kafka = kafka
        self._enable_idempotence = enable_idempotence
        self._client_id = client_id
        self._max_record_bytes = max_record_bytes
        self._factory = producer_factory
        self._ack_timeout = ack_timeout
        self._producer: Any = None
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        """Create the producer and check the cluster answers (its metadata), so a wrong address or refused
        credentials fail here, named, and the policy retries."""
        producer = self._factory(
            **self._kafka.aiokafka_options(),
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._enable_idempotence,
            # The largest record the worker makes (dead letters are cut to fit: processor/worker/dlq.py).
            max_request_size=self._max_record_bytes,
            # A partition's events of one batch in one record batch, not aiokafka's 16 KB ones: a drain
            # then sends a few produce requests per batch instead of dozens (+21 % drained, docs/worker.md).
            max_batch_size=self._max_record_bytes,
            # flush() waits anyway; the linger only groups the records of one batch into few requests.
            linger_ms=2,
            request_timeout_ms=int(DELIVERY_TIMEOUT * 1000),
        )
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise PublishFailed(f"cannot start the Kafka producer: {_describe(exc)}") from None
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    def _started(self, topic: str) -> Any:
        if self._producer is None:
            raise PublishFailed(f"could not publish to {topic}: the producer is not started")
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        producer = self._started(topic)
        try:
            self._pending.append(await producer.send(topic, value, key=key, headers=list(headers)))
        except KafkaError as exc:
            raise PublishFailed(f"could not publish to {topic}: {_describe(exc)}") from None

    async def send_many(self, topic: str, records: Iterable[Keyed]) -> None:
        producer = self._started(topic)
        batches: dict[int, Any] = {}
        try:
            partitions: list[int] | None = None
            for record in records:
                if partitions is None:
                    partitions = sorted(await producer.partitions_for(topic))
                partition = _partition_of(record.key, partitions, partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    # Full: submit it and start the partition's next one.
                    self._pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                        raise PublishFailed(f"an event for {topic} is larger than a whole request")
            for partition, batch in batches.items():
                if batch.record_count():
                    self._pending.append(await producer.send_batch(batch, topic, partition=partition))
        except KafkaError as exc:
            raise PublishFailed(f"could not publish to {topic}: {_describe(exc)}") from None

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        # asyncio.wait, not wait_for: the acknowledgements stay aiokafka's to settle (never cancelled here).
        done, late = await asyncio.wait(pending, timeout=self._ack_timeout)
        if late:
            raise PublishFailed(
                f"Kafka did not acknowledge {len(late)} batch(es) within {self._ack_timeout:.0f}s"
            )
        failures = [e for f in done if not f.cancelled() and (e := f.exception()) is not None]
        if failures:
            raise PublishFailed(
                f"Kafka did not acknowledge {len(failures)} of {len(pending)} batch(es): {_describe(failures[0])}"
            )


def _describe(exc: BaseException) -> str:
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
