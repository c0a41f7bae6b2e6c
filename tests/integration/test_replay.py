"""``slotguard replay`` on the real broker: offset resets redo exactly the changes after the target, and a
replay while a worker runs is refused without changing anything."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from slotguard.cli import main
from slotguard.operate.replay import active_members
from slotguard.settings import Settings
from tests.integration.worker_harness import (
    BASE,
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


def _booking(i: int) -> tuple[bytes, bytes, int | None]:
    return (str(i).encode(), change("c", None, row(i, starts=BASE + timedelta(hours=3 * i))), None)


def _keys(prefix: str, ids: range) -> list[str]:
    return [k for i in ids for k in window_keys(prefix, 15, 1, 123, BASE + timedelta(hours=3 * i))]


def test_replay_to_a_datetime_redoes_exactly_the_changes_after_it(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
    env_of: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    # No second delete: its schedule outlives the first worker and would delete the re-cached early keys,
    # which is not what a replay does.
    settings = worker_settings(dev_stack, topics, key_prefix, second_delete_after=0)
    env_of(settings)
    kafka_options = {"bootstrap_servers": dev_stack.kafka_bootstrap}
    early, late = _keys(key_prefix, range(0, 5)), _keys(key_prefix, range(5, 10))
    redis_client.set(early[0], "x")
    worker = WorkerProcess(settings, tmp_path / "w1.log")
    workers.append(worker)
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(5)])
    wait_keys_gone(redis_client, early[:1], worker)
    between = datetime.now(UTC)
    # Record timestamps are milliseconds: wait until the clock has moved past `between` (not a sleep
    # standing in for the pipeline).
    wait_until(lambda: datetime.now(UTC) > between + timedelta(milliseconds=2), timeout=5, what="the clock")
    redis_client.set(late[0], "x")
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(5, 10)])
    wait_keys_gone(redis_client, late[:1], worker)

    def committed() -> dict[int, int]:
        return committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments)

    wait_until(
        lambda: committed().get(0) == 10, timeout=60, what=lambda: f"offset 10 committed: {committed()}"
    )

    # While the worker runs: refused, nothing changes.
    assert main(["replay", "--to-datetime", between.isoformat(), "--yes"]) == 2
    assert "active member" in capsys.readouterr().err
    assert committed() == {0: 10}

    assert worker.stop() == 0
    # aiokafka leaves a group only from generation 1, Kafka's first; the local tansu broker numbers its
    # first generation 0 and never drops a member itself, so the stopped worker stays listed here and the
    # member check is skipped with --force (which joins the group to evict it); the refusal above is what
    # the check guards.
    assert asyncio.run(active_members(kafka_options, topics.group)), (
        "tansu dropped the member: remove --force"
    )
    for key in early + late:
        redis_client.set(key, "cached again")
    assert main(["replay", "--to-datetime", between.isoformat(), "--dry-run", "--force"]) == 0
    out = capsys.readouterr().out
    assert "5 change(s) would be reprocessed" in out
    assert committed() == {0: 10}  # a dry run changes nothing
    assert main(["replay", "--to-datetime", between.isoformat(), "--yes", "--force"]) == 0
    assert committed() == {0: 5}

    restarted = WorkerProcess(settings.model_copy(), tmp_path / "w2.log")
    workers.append(restarted)
    wait_keys_gone(redis_client, late, restarted)
    wait_until(
        lambda: committed().get(0) == 10, timeout=60, what=lambda: f"offset 10 committed: {committed()}"
    )
    assert still_there(redis_client, early) == early, "changes before the replay time were redone"


def test_a_worker_killed_with_minus_9_blocks_a_replay_until_forced(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
    env_of: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker that died without leaving stays a member until its session times out: a replay then is
    refused, ``--force`` resets the offsets anyway, and the next worker redoes everything after them."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    # A session long enough that the dead member is still listed when the replay runs (the local broker
    # holds a join for half of it, so not longer than needed).
    settings = worker_settings(
        dev_stack, topics, key_prefix, second_delete_after=0, broker_session_timeout=20.0
    )
    env_of(settings)
    kafka_options = {"bootstrap_servers": dev_stack.kafka_bootstrap}
    keys = _keys(key_prefix, range(0, 3))
    for key in keys:
        redis_client.set(key, "cached")
    worker = WorkerProcess(settings, tmp_path / "w1.log")
    workers.append(worker)
    produce(dev_stack.kafka_bootstrap, topics.appointments, [_booking(i) for i in range(3)])
    wait_keys_gone(redis_client, keys, worker)

    def committed() -> dict[int, int]:
        return committed_offsets(dev_stack.kafka_bootstrap, topics.group, topics.appointments)

    wait_until(lambda: committed().get(0) == 3, timeout=60, what=lambda: f"offset 3 committed: {committed()}")
    worker.kill9()
    assert asyncio.run(active_members(kafka_options, topics.group)), "the dead member was dropped at once"
    assert main(["replay", "--to-earliest", "--yes"]) == 2
    assert "active member" in capsys.readouterr().err
    assert committed() == {0: 3}
    assert main(["replay", "--to-earliest", "--yes", "--force"]) == 0
    assert committed() == {0: 0}

    for key in keys:
        redis_client.set(key, "cached again")
    restarted = WorkerProcess(settings.model_copy(), tmp_path / "w2.log")
    workers.append(restarted)
    wait_keys_gone(redis_client, keys, restarted)


def test_replay_without_yes_and_without_a_terminal_refuses(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    env_of: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    env_of(worker_settings(dev_stack, topics, key_prefix))
    assert main(["replay", "--to-earliest"]) == 2
    assert "pass --yes" in capsys.readouterr().err


def test_replay_from_the_dlq_refeeds_dead_letters_once_marked(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    workers: list[WorkerProcess],
    env_of: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Dead letters are re-fed into the appointments topic: one whose cause is gone invalidates, one that still
    fails goes back to the DLQ once (marked), and a second replay re-feeds nothing: the replay remembers
    how far it got, and a marked letter is never re-fed."""
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    settings = worker_settings(dev_stack, topics, key_prefix)
    env_of(settings)
    worker = WorkerProcess(settings, tmp_path / "w.log")
    workers.append(worker)
    good = _booking(1)
    produce(dev_stack.kafka_bootstrap, topics.dlq, [(good[0], good[1], None)])  # as if dead-lettered earlier
    produce(dev_stack.kafka_bootstrap, topics.dlq, [(b"bad", b"{not json", None)])
    keys = _keys(key_prefix, range(1, 2))
    for key in keys:
        redis_client.set(key, "cached")
    assert main(["replay", "--from-dlq", "--yes"]) == 0
    wait_keys_gone(redis_client, keys, worker)
    letters = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=3)
    again = [r for r in letters if r.value == b"{not json"]
    assert len(again) == 2
    assert any(k == "slotguard.replayed-from" for k, _ in again[-1].headers)
    assert main(["replay", "--from-dlq", "--yes"]) == 0
    assert "nothing to re-feed" in capsys.readouterr().out
