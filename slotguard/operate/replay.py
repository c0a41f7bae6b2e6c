"""Replay: reset the worker group's committed offsets on the appointments topic, or re-feed dead letters.

Offsets are reset exactly as Kafka's ``kafka-consumer-groups --reset-offsets`` does it, and refused the
same way while the group has active members: a running worker would overwrite the reset with its next
commit. Re-fed dead letters carry a ``slotguard.replayed-from`` header; the worker treats them as normal
changes, and one that fails again goes back to the DLQ once (the replay never re-feeds a record that
already carries that header), so nothing loops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from processor.worker.dlq import H_REPLAYED_FROM
from schemas.errors import ConfigError, SlotguardError
from slotguard.operate.kafka_group import (
    commit_offsets,
    commit_offsets_as_member,
    committed_and_end_offsets,
    group_state,
)


class ReplayRefused(SlotguardError):
    """The replay would be unsafe (the group has active members) or was not confirmed."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to reset to: one of earliest / latest / datetime / offsets."""

    kind: str  # "earliest" | "latest" | "datetime" | "offsets"
    when: datetime | None = None
    offsets: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    partition: int
    current: int | None
    new: int
    end: int

    @property
    def reprocessed(self) -> int:
        """Changes the worker will handle again (or skip, when negative) after the reset."""
        return (self.current if self.current is not None else self.end) - self.new


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """``2h``, ``90m``, ``1d12h``, ``30s`` -> timedelta; a one-line ConfigError otherwise."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ConfigError(f"--by-duration {text!r}: expected e.g. 2h, 90m, 1d12h, 30s")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


def parse_datetime(text: str) -> datetime:
    """ISO 8601; a naive time is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--to-datetime {text!r}: not an ISO 8601 time (e.g. 2025-10-15T14:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_offset(text: str) -> tuple[int, int]:
    try:
        partition, offset = text.split(":", 1)
        return int(partition), int(offset)
    except ValueError:
        raise ConfigError(f"--to-offset {text!r}: expected PARTITION:OFFSET, e.g. 0:1200") from None


async def active_members(options: dict[str, Any], group: str) -> list[str]:
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=10000)
    await admin.start()
    try:
        _, members = group_state((await admin.describe_consumer_groups([group]))[0])
        return members
    finally:
        await admin.close()


async def plan(
    options: dict[str, Any], group: str, topic: str, target: Target, partitions: Sequence[int] | None = None
) -> list[PartitionPlan]:
    """What a reset would do, per partition (nothing is changed)."""
    committed, ends = await committed_and_end_offsets(options, group, topic)
    if not ends:
        raise ConfigError(f"topic {topic} does not exist or has no partitions")
    chosen = sorted(ends) if partitions is None else sorted(partitions)
    unknown = [p for p in chosen if p not in ends]
    if unknown:
        raise ConfigError(
            f"topic {topic} has no partition {', '.join(map(str, unknown))} (it has {len(ends)})"
        )
    begins = await _beginnings(options, topic, chosen)
    new: dict[int, int] = {}
    if target.kind == "earliest":
        new = {p: begins[p] for p in chosen}
    elif target.kind == "latest":
        new = {p: ends[p] for p in chosen}
    elif target.kind == "datetime":
        assert target.when is not None
        new = await _offsets_for_time(options, topic, chosen, target.when, ends)
    else:
        wanted = dict(target.offsets)
        chosen = [p for p in chosen if p in wanted] if partitions is None else chosen
        missing = [p for p in chosen if p not in wanted]
        if missing:
            raise ConfigError(f"no --to-offset given for partition {', '.join(map(str, missing))}")
        new = {p: min(max(wanted[p], begins[p]), ends[p]) for p in chosen}
    return [PartitionPlan(p, committed.get(p), new[p], ends[p]) for p in chosen]


async def _beginnings(options: dict[str, Any], topic: str, partitions: Sequence[int]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        found = await consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: o for tp, o in found.items()}
    finally:
        await consumer.stop()


async def _offsets_for_time(
    options: dict[str, Any], topic: str, partitions: Sequence[int], when: datetime, ends: dict[int, int]
) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ms = int(when.timestamp() * 1000)
        found = await consumer.offsets_for_times({TopicPartition(topic, p): ms for p in partitions})
        # No record at or after the time: the end (nothing to replay on that partition).
        return {
            tp.partition: (ot.offset if ot is not None else ends[tp.partition]) for tp, ot in found.items()
        }
    finally:
        await consumer.stop()


async def apply(
    options: dict[str, Any],
    group: str,
    topic: str,
    plans: Sequence[PartitionPlan],
    *,
    check_members: bool = True,
) -> None:
    """Commit the planned offsets, after checking again that no worker is running.

    The commit is a non-member OffsetCommit (generation -1), which Apache Kafka itself rejects while the
    group has members -- a second line of defence behind the DescribeGroups check."""
    offsets = {p.partition: p.new for p in plans}
    try:
        if not check_members:
            await commit_offsets_as_member(options, group, topic, offsets)
            return
        members = await active_members(options, group)
        if members:
            raise ReplayRefused(refusal(group, members))
        await commit_offsets(options, group, topic, offsets)
    except (KafkaError, TimeoutError) as exc:
        raise ReplayRefused(
            f"the broker refused the reset of group {group}: {type(exc).__name__}: {exc}"
        ) from None


def refusal(group: str, members: Sequence[str]) -> str:
    shown = ", ".join(members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
    return (
        f"group {group} has {len(members)} active member(s) ({shown}); stop the workers first "
        "(a running worker would overwrite the reset)"
    )


# --- dead letters ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def error(self) -> str:
        return dict(self.headers).get("slotguard.error", b"").decode("utf-8", "replace")

    @property
    def replayed(self) -> bool:
        return any(k == H_REPLAYED_FROM for k, _ in self.headers)


def replay_group(group: str) -> str:
    """The group that remembers how far ``--from-dlq`` got (its committed offsets on the DLQ)."""
    return f"{group}.dlq-replay"


async def read_dead_letters(
    options: dict[str, Any], dlq: str, since: datetime | None, group: str
) -> tuple[list[DeadLetter], dict[int, int]]:
    """The DLQ's records up to its current end -- from ``since``, else from where the last replay stopped
    (``group``'s committed offsets), else from the beginning -- and those end offsets."""
    consumer = AIOKafkaConsumer(
        **options, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(dlq) or ())
        if not partitions:
            await consumer.topics()
            partitions = sorted(consumer.partitions_for_topic(dlq) or ())
        tps = [TopicPartition(dlq, p) for p in partitions]
        if not tps:
            return [], {}
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since is not None:
            found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
            for tp in tps:
                consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
        else:
            for tp in tps:
                done = await consumer.committed(tp)
                if done is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, done)
        letters: list[DeadLetter] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        headers = tuple((str(k), bytes(v or b"")) for k, v in (r.headers or ()))
                        letters.append(
                            DeadLetter(tp.partition, r.offset, r.timestamp, r.key, r.value, headers)
                        )
        ordered = sorted(letters, key=lambda d: (d.timestamp_ms, d.partition, d.offset))
        return ordered, {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def refeed(
    options: dict[str, Any], letters: Sequence[DeadLetter], *, dlq: str, topic: str, enable_idempotence: bool
) -> int:
    """Produce ``letters`` (not already replayed ones) back to the appointments topic; the number sent."""
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=enable_idempotence)
    await producer.start()
    sent = 0
    try:
        futures = []
        for letter in letters:
            if letter.replayed:
                continue
            headers = [(k, v) for k, v in letter.headers if not k.startswith("slotguard.")]
            headers.append((H_REPLAYED_FROM, f"{dlq}:{letter.partition}:{letter.offset}".encode()))
            futures.append(await producer.send(topic, value=letter.value, key=letter.key, headers=headers))
            sent += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent
