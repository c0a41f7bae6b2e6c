"""The worker's consumer group seen from outside: state, members, committed and end offsets.

Committed offsets are read and written the way Kafka's own ``kafka-consumer-groups`` tool does it: a
consumer with the group's id that never joins (``assign`` + OffsetFetch / OffsetCommit), which Kafka accepts
while the group has no active member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata, TopicPartition


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """aiokafka logs every failed connection attempt itself; our one-line errors already say it all."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


def group_state(desc: Any) -> tuple[str, list[str]]:
    """(state, member ids) from aiokafka's DescribeGroups response."""
    groups = getattr(desc, "groups", None) or []
    if not groups:
        return "Unknown", []
    # (error_code, group_id, state, protocol_type, protocol, members[, authorized_operations])
    entry = groups[0]
    members = [str(m[1]) or str(m[0]) for m in entry[5]]
    return str(entry[2]) or "Unknown", members


async def committed_and_end_offsets(
    options: dict[str, Any], group: str, topic: str
) -> tuple[dict[int, int | None], dict[int, int]]:
    """Per partition: the group's committed offset (``None`` = never committed) and the log-end offset."""
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return {}, {}
        consumer.assign(tps)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        return committed, ends
    finally:
        await consumer.stop()


async def commit_offsets(options: dict[str, Any], group: str, topic: str, offsets: dict[int, int]) -> None:
    """Set the group's committed offsets (the group must have no active member)."""
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in tps.items()})
    finally:
        await consumer.stop()


async def commit_offsets_as_member(
    options: dict[str, Any], group: str, topic: str, offsets: dict[int, int], *, within: float = 60.0
) -> None:
    """Join the group, wait until it assigned every partition of ``offsets`` to us, commit, leave.

    For a group whose membership the broker still lists although its members are gone (the local tansu
    broker never drops them): a join makes the broker rebalance, members that no longer heartbeat are
    evicted, and the commit is a member's commit. Only safe when no worker runs.
    """
    consumer = AIOKafkaConsumer(
        **options,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    consumer.subscribe([topic])
    await consumer.start()
    try:
        wanted = {TopicPartition(topic, p) for p in offsets}
        deadline = time.monotonic() + within
        # The join runs in aiokafka's coordinator task; poll the assignment until it holds our partitions.
        while not wanted <= consumer.assignment():
            if time.monotonic() > deadline:
                got = sorted(tp.partition for tp in consumer.assignment())
                raise TimeoutError(
                    f"the group assigned partitions {got} in {within:.0f}s, not all of {sorted(offsets)}"
                )
            await asyncio.sleep(0.1)
        await consumer.commit({tp: OffsetAndMetadata(offsets[tp.partition], "") for tp in wanted})
    finally:
        await consumer.stop()


async def end_offsets(options: dict[str, Any], topic: str) -> dict[int, int]:
    """Per partition of ``topic``: the log-end offset now (the next record's offset)."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def records_since(
    options: dict[str, Any], topic: str, starts: dict[int, int], *, within: float = 120.0
) -> AsyncIterator[Any]:
    """Every record of ``topic`` from ``starts`` (per partition; a partition not named from its start) up to
    the log end as it is when called, each partition in offset order; then the iteration ends. Raises
    :class:`TimeoutError` naming what is left when that takes longer than ``within`` seconds."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(starts.get(tp.partition, 0), firsts[tp]))
        left = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + within
        while left:
            if time.monotonic() > deadline:
                behind = {tp.partition: ends[tp] - await consumer.position(tp) for tp in sorted(left)}
                raise TimeoutError(
                    f"{topic}: records left unread after {within:.0f}s, per partition: {behind}"
                )
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, sorted (metadata fetched once more when the client has none yet)."""
    partitions = consumer.partitions_for_topic(topic) or set()
    if not partitions:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def follow_from_end(options: dict[str, Any], topic: str, ready: asyncio.Event) -> AsyncIterator[Any]:
    """Every record of every partition of ``topic`` written from now on (a group-less consumer positioned at
    the end; ``ready`` is set once it is), until the caller stops iterating."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()
