"""Publishing derived events and dead letters: aiokafka's producer, acks=all, errors wrapped.

:meth:`KafkaPublisher.send` enqueues a record and returns a future that completes when the broker
acknowledged it; every aiokafka error -- on enqueue or on the acknowledgement -- surfaces as
:class:`~processor.worker.errors.PublishFailed`, which the failure policy retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from processor.worker.errors import PublishFailed
from schemas.connections import KafkaConnection

Headers = Sequence[tuple[str, bytes]]


class Publisher(Protocol):
    """Sends records; :meth:`flush` returns once every record sent so far is acknowledged."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None: ...

    async def flush(self) -> None: ...


class KafkaPublisher:
    """:class:`Publisher` over one :class:`~aiokafka.AIOKafkaProducer`."""

    def __init__(self, kafka: KafkaConnection, *, enable_idempotence: bool, client_id: str) -> None:
        self._kafka = kafka
        self._enable_idempotence = enable_idempotence
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        """Connect (aiokafka clients must be built inside the running loop, so here, not in __init__)."""
        producer = AIOKafkaProducer(
            **self._kafka.aiokafka_options(),
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._enable_idempotence,
            linger_ms=0,
            request_timeout_ms=15000,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise PublishFailed(f"cannot start the Kafka producer: {type(exc).__name__}: {exc}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if self._producer is None:
            raise PublishFailed(f"could not publish to {topic}: the producer is not started")
        try:
            future = await self._producer.send(topic, value=value, key=key, headers=list(headers) or None)
        except KafkaError as exc:
            raise PublishFailed(f"could not publish to {topic}: {type(exc).__name__}: {exc}") from exc
        self._pending.append(future)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise PublishFailed(f"Kafka did not acknowledge a record: {type(failed).__name__}: {failed}")


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
