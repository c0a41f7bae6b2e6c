"""At-least-once under failure: Redis outages, ``kill -9`` of the worker, two workers sharing a group."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from slotguard.dev.parts import free_port
from tests.integration.worker_harness import (
    BASE,
    PrivateRedis,
    Topics,
    WorkerProcess,
    change,
    committed_offsets,
    make_topics,
    produce,
    read_topic,
    row,
    still_there,
    wait_keys_gone,
    window_keys,
    worker_settings,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _start(started: list[WorkerProcess], settings: Any, tmp_path: Path) -> WorkerProcess:
    w = WorkerProcess(settings, tmp_path / f"worker{len(started)}.log")
    started.append(w)
    return w


def _booking(i: int) -> tuple[bytes, bytes, int | None]:
    return (str(i).encode(), change("c", None, row(i, starts=BASE + timedelta(hours=3 * i))), None)


def _keys(prefix: str, ids: Iterable[int]) -> list[str]:
    return [k for i in ids for k in window_keys(prefix, 15, 1, 123, BASE + timedelta(hours=3 * i))]


def test_redis_outage_blocks_commits_and_everything_pending_is_invalidated_after(
    dev_stack: Any, topics: Topics, key_prefix: str, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """While Redis is down the worker retries, keeps the group's committed offset behind the pending changes,
    and once Redis is back on the same port every affected key is deleted and the offsets are committed."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    private = PrivateRedis(tmp_path / "redis")
    private.start()
    try:
        client = redis.Redis(port=private.port, decode_responses=True)
        before_outage, during_outage = _keys(key_prefix, range(0, 1)), _keys(key_prefix, range(1, 4))
        for key in before_outage + during_outage:
            client.set(key, "cached")
        settings = worker_settings(
            dev_stack, topics, key_prefix, redis_url=private.url, redis_retry_max_backoff=0.5
        )
        worker = _start(workers, settings, tmp_path)
        produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(0)])

        def committed() -> dict[int, int]:
            return committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments)

        wait_until(
            lambda: (
                worker.alive_or_fail() and not still_there(client, before_outage) and committed().get(0) == 1
            ),
            timeout=120,
            what=lambda: (
                f"first change processed and committed (committed={committed()}); log:\n{worker.log_tail()}"
            ),
        )

        private.stop()
        produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(1), _booking(2), _booking(3)])
        # 10 failed attempts at <= 0.5 s apart outlast several of Faust's 2.8 s commit intervals.
        wait_until(
            lambda: worker.alive_or_fail() and worker.metric("slotguard_redis_retries_total") >= 10,
            timeout=120,
            what=lambda: f"the worker to retry Redis 10 times; log:\n{worker.log_tail()}",
        )
        assert committed().get(0) == 1, (
            f"offset committed past changes whose keys were not deleted: {committed()}"
        )
        health = worker.healthz()
        assert health is not None
        assert health[0] == 503
        assert health[1]["redis"] is False

        private.start()  # same port, same AOF: the keys seeded before the outage are back
        assert still_there(client, during_outage) == during_outage
        wait_until(
            lambda: (
                worker.alive_or_fail() and not still_there(client, during_outage) and committed().get(0) == 4
            ),
            timeout=120,
            what=lambda: (
                f"keys still present {still_there(client, during_outage)}, committed={committed()}; "
                f"log:\n{worker.log_tail()}"
            ),
        )
    finally:
        private.stop()


#: Changes before the kill: enough 5-change batches that the kill lands mid-stream.
FIRST = 2000


def test_kill_9_mid_stream_then_restart_loses_nothing(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """A worker killed with SIGKILL mid-stream and started again processes every change: those it had not
    committed (their keys are cached again before the restart, so only the restarted worker can delete
    them) and those produced while it was dead."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    keys = _keys(key_prefix, range(FIRST + 30))
    for key in keys:
        redis_client.set(key, "cached")
    settings = worker_settings(dev_stack, topics, key_prefix, batch_size=5)
    worker = _start(workers, settings, tmp_path)
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(FIRST)])
    wait_until(
        lambda: worker.alive_or_fail() and worker.metric("slotguard_batches_total") >= 1,
        timeout=120,
        what=lambda: f"a first batch; log:\n{worker.log_tail()}",
    )
    worker.kill9()
    # Records at or after the committed offset were possibly handled but not committed: a reader may have
    # cached their slots again since. Re-cache them, so the restarted worker must redo exactly those.
    done = committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments).get(0, 0)
    assert done < FIRST, "the first worker committed everything before the kill; nothing left to redo"
    for key in _keys(key_prefix, range(done, FIRST)):
        redis_client.set(key, "cached again")
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(FIRST, FIRST + 30)])

    restarted = _start(workers, settings.model_copy(update={"web_port": settings.web_port}), tmp_path)
    wait_keys_gone(redis_client, keys, restarted, timeout=180)


def test_two_workers_share_the_partitions_of_one_group(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """Two workers in one group on a 2-partition topic both get a partition, and together process every
    change; /metrics shows the counters and the commit-to-delete latency histogram."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 2})
    first = _start(workers, worker_settings(dev_stack, topics, key_prefix), tmp_path)
    second = _start(workers, worker_settings(dev_stack, topics, key_prefix), tmp_path)
    wait_until(
        lambda: (
            first.alive_or_fail()
            and second.alive_or_fail()
            and first.metric("slotguard_assigned_partitions") == 1
            and second.metric("slotguard_assigned_partitions") == 1
        ),
        timeout=120,
        what=lambda: (
            f"one partition each (first={first.metric('slotguard_assigned_partitions')}, "
            f"second={second.metric('slotguard_assigned_partitions')}); logs:\n{first.log_tail()}\n---\n{second.log_tail()}"
        ),
    )
    keys = _keys(key_prefix, range(40))
    for key in keys:
        redis_client.set(key, "cached")
    produce(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [(k, v, i % 2) for i, (k, v, _) in enumerate(_booking(i) for i in range(40))],
    )
    wait_keys_gone(redis_client, keys, first, second)

    def per_worker() -> list[float]:
        return [w.metric("slotguard_changes_total", op="c", outcome="invalidated") for w in (first, second)]

    # A batch is counted once its events are acknowledged too, a moment after its keys are gone.
    wait_until(
        lambda: per_worker() == [20, 20], timeout=30, what=lambda: f"changes per worker: {per_worker()}"
    )
    for w in (first, second):
        samples = w.metrics()
        assert samples["slotguard_commit_to_delete_seconds_count"] == 20
        assert samples["slotguard_keys_deleted_total"] == 60
        assert samples['slotguard_events_total{type="booked"}'] == 20
        _report_latency(w)


def _report_latency(worker: WorkerProcess) -> None:
    """Print the median and p99 commit->delete latency estimated from the histogram's buckets (-s shows it)."""
    samples = worker.metrics()
    buckets = sorted(
        (float(k.split('le="')[1].rstrip('"}')), v)
        for k, v in samples.items()
        if k.startswith("slotguard_commit_to_delete_seconds_bucket")
    )
    total = samples["slotguard_commit_to_delete_seconds_count"]
    mean = samples["slotguard_commit_to_delete_seconds_sum"] / total

    def quantile(q: float) -> float:
        return next(le for le, count in buckets if count >= q * total)

    print(
        f"\ncommit->delete latency (worker {worker.proc.pid}, n={total:.0f}): mean={mean * 1000:.1f} ms, "
        f"median<={quantile(0.5) * 1000:.0f} ms, p99<={quantile(0.99) * 1000:.0f} ms"
    )


def test_a_rebalance_while_a_batch_retries_against_a_dead_redis_does_not_stall_the_group(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """Worker A holds both partitions and retries forever against its dead Redis; worker B joins: the group
    rebalances anyway (A does not wait for its stuck batch), and B redoes what A never committed."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 2})
    dead = PrivateRedis(tmp_path / "dead-redis")  # never started: every UNLINK of A fails
    stuck = _start(
        workers,
        worker_settings(dev_stack, topics, key_prefix, redis_url=dead.url, redis_retry_max_backoff=0.5),
        tmp_path,
    )
    wait_until(
        lambda: stuck.alive_or_fail() and stuck.metric("slotguard_assigned_partitions") == 2,
        timeout=120,
        what=lambda: f"worker A to own both partitions; log:\n{stuck.log_tail()}",
    )
    by_partition = {p: _keys(key_prefix, range(p, 20, 2)) for p in (0, 1)}
    for keys in by_partition.values():
        for key in keys:
            redis_client.set(key, "cached")
    produce(dev_stack.kafka_bootstrap, topics.appointments, [(*_booking(i)[:2], i % 2) for i in range(20)])
    wait_until(
        lambda: stuck.alive_or_fail() and stuck.metric("slotguard_redis_retries_total") >= 3,
        timeout=60,
        what=lambda: f"worker A to be retrying; log:\n{stuck.log_tail()}",
    )
    helper = _start(workers, worker_settings(dev_stack, topics, key_prefix), tmp_path)
    wait_until(
        lambda: helper.alive_or_fail() and helper.metric("slotguard_assigned_partitions") >= 1,
        timeout=90,
        what=lambda: (
            f"the rebalance to give worker B a partition; A:\n{stuck.log_tail()}\nB:\n{helper.log_tail()}"
        ),
    )
    wait_until(
        lambda: any(not still_there(redis_client, keys) for keys in by_partition.values()),
        timeout=90,
        what=lambda: f"worker B to redo its partition's changes; B:\n{helper.log_tail()}",
    )


def test_the_redo_window_handles_recent_changes_again_on_assignment(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """The safety net: with SLOTGUARD_REDO_WINDOW a restarted worker redoes the last window's committed changes
    (keys cached again meanwhile vanish again), and counts what it redid -- the net's cost."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    keys = _keys(key_prefix, range(10))
    for key in keys:
        redis_client.set(key, "cached")
    # No second delete: its schedule would outlive the first worker and delete the re-cached keys before the
    # redo does -- this test is about the redo alone.
    first = _start(workers, worker_settings(dev_stack, topics, key_prefix, second_delete_after=0), tmp_path)
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(10)])
    wait_keys_gone(redis_client, keys, first)
    wait_until(
        lambda: committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments).get(0) == 10,
        timeout=60,
        what="offset 10 committed",
    )
    assert first.stop() == 0
    for key in keys:
        redis_client.set(key, "cached again")  # e.g. a stale fill the first run could not have prevented
    second = _start(
        workers,
        worker_settings(dev_stack, topics, key_prefix, redo_window=600.0, second_delete_after=0),
        tmp_path,
    )
    wait_keys_gone(redis_client, keys, second)
    assert second.metric("slotguard_redone_changes_total") == 10


def test_a_dead_letter_larger_than_kafka_takes_goes_out_truncated_and_the_partition_moves_on(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """A 1.2 MB record that cannot be read makes a dead letter over Kafka's 1 MB limit: it goes out cut to
    fit, with headers giving the original size and SHA-256, is not retried forever, and the changes behind
    it are invalidated and committed."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    keys = _keys(key_prefix, range(3))
    for key in keys:
        redis_client.set(key, "cached")
    big = b"\x00" * 1_200_000
    _produce_large(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [(b"0", _booking(0)[1]), (b"big", big), (b"2", _booking(2)[1])],
    )
    worker = _start(workers, worker_settings(dev_stack, topics, key_prefix), tmp_path)
    wait_keys_gone(redis_client, _keys(key_prefix, (0, 2)), worker)
    wait_until(
        lambda: committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments).get(0) == 3,
        timeout=60,
        what=lambda: f"the commit past the dead letter; log:\n{worker.log_tail()}",
    )
    (dead,) = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=1)
    headers = dict(dead.headers)
    assert dead.key == b"big"
    assert dead.value is not None
    assert 0 < len(dead.value) < 1_000_000
    assert big.startswith(dead.value)
    assert headers["slotguard.truncated"] == b"value"
    assert headers["slotguard.original-size"] == b"1200000"
    assert headers["slotguard.original-sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert worker.metric("slotguard_publish_retries_total") == 0


def _produce_large(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_request_size=4_000_000, enable_idempotence=False
        )
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(go())


def test_the_second_delete_removes_a_stale_fill_even_across_a_worker_crash(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    """With SLOTGUARD_SECOND_DELETE_AFTER, a stale fill written right after the first delete is gone after the
    delay -- and the schedule lives in Redis, so a worker killed between the two deletes does not drop it."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    keys = _keys(key_prefix, range(1))
    for key in keys:
        redis_client.set(key, "cached")
    settings = worker_settings(dev_stack, topics, key_prefix, second_delete_after=5.0)
    first = _start(workers, settings, tmp_path)
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(0)])
    wait_keys_gone(redis_client, keys, first)
    wait_until(
        lambda: committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments).get(0) == 1,
        timeout=60,
        what="the change committed (so the restarted worker does not simply redo it)",
    )
    first.kill9()  # between the first and the second delete
    for key in keys:
        redis_client.set(key, "stale: slot free")  # the slow reader's fill lands after the first delete
    assert redis_client.zcard(f"{key_prefix}slotguard:second-delete") == 1  # one chunk: the change's keys
    second = _start(workers, settings.model_copy(update={"web_port": free_port()}), tmp_path)
    wait_keys_gone(redis_client, keys, second)
    assert second.metric("slotguard_second_deletes_total") == len(keys)
    assert redis_client.zcard(f"{key_prefix}slotguard:second-delete") == 0
