"""Is the source alive, and is its stream whole?

Debezium writes a heartbeat record every ``heartbeat.interval.ms`` even when no booking changes; when none
arrives for ``stall_after`` seconds, the connector (or the relay) is not streaming, and ``/healthz`` says
so instead of reporting ok over a pipeline that delivers nothing.

slotguard writes its own control records to the same topic (:mod:`schemas.control`): the relay when it
finds a gap in the change stream (a replication slot dropped or invalidated), ``slotguard source recover``
when the gap was recovered from. The watch keeps the latest, so ``/healthz`` and the
``slotguard_source_gap`` metric say what happened and what to run. It starts a few records before the
end, so a worker started after the relay stopped on a gap still learns of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from schemas.connections import KafkaConnection
from schemas.control import CONTROL_HEADER, SOURCE_GAP, SourceGap

log = logging.getLogger("slotguard.worker.source")

#: Records read back from the end at start, per partition, for a control record written shortly before.
LOOKBACK = 50


class SourceWatch:
    """Follows the heartbeat topic (group-less) and remembers when the last heartbeat came and the last gap."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        topic: str,
        stall_after: float,
        on_gap: Callable[[SourceGap], None] = lambda gap: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._stall_after = stall_after
        self._on_gap = on_gap
        self._clock = clock
        self._started = clock()
        self.last_heartbeat: float | None = None
        #: The latest source-gap record seen: ``state`` says whether the source is stopped on it.
        self.gap: SourceGap | None = None

    def stalled(self) -> bool:
        """True when no heartbeat came for ``stall_after`` seconds (counted from start until the first)."""
        since = self.last_heartbeat if self.last_heartbeat is not None else self._started
        return self._clock() - since > self._stall_after

    @property
    def gap_open(self) -> bool:
        return self.gap is not None and self.gap.state == "detected"

    def seen(self) -> None:
        if self.last_heartbeat is not None and self.stalled():
            log.info("source heartbeats resumed", extra={"topic": self._topic})
        self.last_heartbeat = self._clock()

    def control(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Take ``record`` if it is a control record (True); anything else is a heartbeat (False)."""
        kind = next((v for k, v in record.headers if k == CONTROL_HEADER), None)
        if kind is None:
            return False
        if kind != SOURCE_GAP.encode() or record.value is None:
            return True  # a kind this version does not know: not a heartbeat either
        try:
            gap = SourceGap.model_validate_json(record.value)
        except ValidationError as exc:
            log.warning("ignoring a malformed source-gap record: %s", str(exc).splitlines()[0])
            return True
        if self.gap is None or gap.recorded_at >= self.gap.recorded_at:
            self.gap = gap
            level = logging.ERROR if gap.state == "detected" else logging.WARNING
            log.log(level, "source gap: %s", gap.describe())
            self._on_gap(gap)
        return True

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a look-back past what retention kept starts at the first record
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
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - LOOKBACK))
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        # Records from before the start count for their control records only.
                        if not self.control(record) and record.offset >= ends[tp]:
                            self.seen()
        finally:
            await consumer.stop()
