"""Is the source alive? Debezium writes a heartbeat record every ``heartbeat.interval.ms`` even when no
booking changes; when none arrives for ``stall_after`` seconds, the connector (or the relay) is not
streaming, and ``/healthz`` says so instead of reporting ok over a pipeline that delivers nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.connections import KafkaConnection

log = logging.getLogger("slotguard.worker.source")


class SourceWatch:
    """Follows the heartbeat topic (group-less, from its end) and remembers when the last record came."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        topic: str,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._stall_after = stall_after
        self._clock = clock
        self._started = clock()
        self.last_heartbeat: float | None = None

    def stalled(self) -> bool:
        """True when no heartbeat came for ``stall_after`` seconds (counted from start until the first)."""
        since = self.last_heartbeat if self.last_heartbeat is not None else self._started
        return self._clock() - since > self._stall_after

    def seen(self) -> None:
        if self.last_heartbeat is not None and self.stalled():
            log.info("source heartbeats resumed", extra={"topic": self._topic})
        self.last_heartbeat = self._clock()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_options(),
            group_id=None,
            enable_auto_commit=False,
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        try:
            partitions: set[int] = set()
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(self._topic) or set()
                if not partitions:
                    # The topic appears with the connector's first heartbeat; until then, ask again later.
                    batch = await consumer.getmany(timeout_ms=2000)
                    del batch
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                if any(batch.values()):
                    self.seen()
        finally:
            await consumer.stop()
