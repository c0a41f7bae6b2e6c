"""The services feed: every worker's local view of the ``services`` table, from its CDC topic.

Read by a group-less Kafka consumer from the beginning of every partition: every worker needs *all*
services, while a consumer group (or a Faust table) would give each worker only the partitions it owns
(docs/worker.md has the measured reason it is not a Faust GlobalTable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from processor.core.config import CoreConfig
from processor.core.services import decode_service_change
from processor.worker.metrics import WorkerMetrics
from processor.worker.resolution import LayeredResolver
from schemas.connections import KafkaConnection
from schemas.errors import InputError

log = logging.getLogger("slotguard.worker.services")


class ServicesFeed:
    """Reads the whole ``services`` topic (every partition, from the start, no consumer group) into
    :attr:`resolver`'s local view and keeps following it. :attr:`ready` is set once it caught up with
    the end offsets it saw at start (or the topic does not exist yet, or ``ready_timeout`` passed)."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        topic: str,
        config: CoreConfig,
        resolver: LayeredResolver,
        metrics: WorkerMetrics,
        ready_timeout: float = 10.0,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._config = config
        self._resolver = resolver
        self._metrics = metrics
        self._ready_timeout = ready_timeout
        self.ready = asyncio.Event()

    def apply(self, value: bytes | None) -> None:
        """Apply one services change event to the local view (bad records are logged and skipped)."""
        try:
            change = decode_service_change(value, self._config)
        except InputError as exc:
            log.warning("unreadable services change skipped", extra={"error": str(exc)})
            return
        if change is None:
            return
        self._metrics.services_seen.inc()
        previous = self._resolver.local.service(change.service_id)
        if previous is not None:
            self._resolver.forget(previous)
        if change.info is None:
            self._resolver.local.remove(change.service_id)
        else:
            self._resolver.local.put(change.info)
            self._resolver.forget(change.info)

    async def _caught_up(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
        for tp, end in targets.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + self._ready_timeout
            targets: dict[TopicPartition, int] | None = None
            partitions = await _partitions(consumer, self._topic)
            if partitions:
                tps = [TopicPartition(self._topic, p) for p in partitions]
                consumer.assign(tps)
                targets = await consumer.end_offsets(tps)
            else:
                # No services topic yet: nothing to wait for; follow it once it appears.
                self.ready.set()
                consumer.subscribe([self._topic])
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self.apply(record.value)
                if not self.ready.is_set() and (
                    targets is None or await self._caught_up(consumer, targets) or time.monotonic() > deadline
                ):
                    log.info("services feed caught up", extra={"services": len(self._resolver.local)})
                    self.ready.set()
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> Iterable[int]:
    topics = await consumer.topics()
    if topic not in topics:
        return ()
    return sorted(consumer.partitions_for_topic(topic) or ())
