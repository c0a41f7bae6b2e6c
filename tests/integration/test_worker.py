"""The worker against real Kafka (tansu) and Redis: invalidation, derived events, dead letters, resolution."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from tests.integration.worker_harness import (
    BASE,
    Topics,
    WorkerProcess,
    change,
    make_topics,
    new_topics,
    produce,
    read_topic,
    row,
    service_change,
    still_there,
    wait_keys_gone,
    window_keys,
    worker_settings,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(dev_stack: Any, unique_name: Callable[[str], str]) -> Topics:
    t = new_topics(unique_name)
    make_topics(dev_stack.kafka_bootstrap, {t.appointments: 1, t.services: 1, t.events: 1, t.dlq: 1})
    # Services of company 15: 7 -> event type 123, 8 -> 124, 10 -> none; company 20: 9 -> 123.
    produce(
        dev_stack.kafka_bootstrap,
        t.services,
        [
            (b"7", service_change(7, 15, 123), None),
            (b"8", service_change(8, 15, 124), None),
            (b"9", service_change(9, 20, 123), None),
            (b"10", service_change(10, 15, None), None),
        ],
    )
    return t


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Any) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path / f"worker{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_changes_delete_exactly_their_keys_and_publish_events(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Booked/rescheduled/cancelled changes unlink exactly their windows' keys (another tenant's and a
    notes-only update's keys survive) and publish one derived event each, keyed by appointment id."""
    p = key_prefix
    booked_at, moved_to, cancelled_at, notes_at = (BASE, BASE + timedelta(days=1, hours=-5),
                                                   BASE + timedelta(days=2), BASE + timedelta(days=3))  # fmt: skip
    doomed = (
        window_keys(p, 15, 1, 123, booked_at)
        + window_keys(p, 15, 1, 123, moved_to)
        + window_keys(p, 15, 1, 124, cancelled_at)
        + window_keys(p, 15, 1, 123, booked_at + timedelta(days=10))  # the sentinel's
    )
    survivors = (
        window_keys(p, 20, 1, 123, booked_at)  # another company, same hour and event type
        + window_keys(p, 15, 2, 123, booked_at)  # another branch
        + window_keys(p, 15, 1, 123, notes_at)  # only the notes of that appointment change
    )
    for key in doomed + survivors:
        redis_client.set(key, "cached")

    b = row(1, starts=booked_at)
    r_before, r_after = row(2, starts=BASE), row(2, starts=moved_to)
    c_before = row(3, starts=cancelled_at, service=8)
    c_after = {**c_before, "status": "cancelled"}
    n_before = row(4, starts=notes_at)
    n_after = {**n_before, "notes": "call first"}
    sentinel = row(5, starts=booked_at + timedelta(days=10))
    # The reschedule's old window is booked_at's: its keys are in `doomed` twice over, which is fine.
    produce(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [
            (b"1", change("c", None, b), None),
            (b"2", change("u", r_before, r_after), None),
            (b"3", change("u", c_before, c_after), None),
            (b"4", change("u", n_before, n_after), None),
            (b"5", change("c", None, sentinel), None),
        ],
    )
    worker = start_worker(worker_settings(dev_stack, topics, key_prefix))

    wait_keys_gone(redis_client, doomed, worker)
    assert still_there(redis_client, survivors) == survivors

    events = read_topic(dev_stack.kafka_bootstrap, topics.events, at_least=4)
    by_key = {(r.key, orjson.loads(r.value or b"null")["type"]) for r in events}
    assert by_key == {(b"1", "booked"), (b"2", "rescheduled"), (b"3", "cancelled"), (b"5", "booked")}
    for record in events:
        assert orjson.loads(record.value or b"null")["appointment_id"] == (record.key or b"").decode()

    assert worker.metric("slotguard_changes_total", op="u", outcome="noop") == 1
    assert worker.metric("slotguard_events_total", type="booked") == 2
    assert worker.metric("slotguard_keys_deleted_total") == len(set(doomed))


def test_bad_records_go_to_the_dlq_with_reasons_and_the_rest_is_processed(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Garbage bytes and key-injection attempts land in the DLQ (original bytes, error headers); the valid
    changes before and after them are still invalidated."""
    p = key_prefix
    first, last = row(1, starts=BASE), row(2, starts=BASE + timedelta(days=1))
    keys = window_keys(p, 15, 1, 123, BASE) + window_keys(p, 15, 1, 123, BASE + timedelta(days=1))
    for key in keys:
        redis_client.set(key, "cached")
    garbage = b"\x00\xffnot json at all"
    star = change("c", None, row(3, starts=BASE, company="15*"))
    space = change("c", None, row(4, starts=BASE, company="1 2"))
    produce(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [(b"1", change("c", None, first), None), (b"g", garbage, None), (b"3", star, None),
         (b"4", space, None), (b"2", change("c", None, last), None)],
    )  # fmt: skip
    worker = start_worker(worker_settings(dev_stack, topics, key_prefix))

    wait_keys_gone(redis_client, keys, worker)
    dead = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=3)
    assert [(r.key, r.value) for r in dead] == [(b"g", garbage), (b"3", star), (b"4", space)]
    for record, offset in zip(dead, (1, 2, 3), strict=True):
        headers = dict(record.headers)
        assert headers["slotguard.topic"] == topics.appointments.encode()
        assert headers["slotguard.partition"] == b"0"
        assert headers["slotguard.offset"] == str(offset).encode()
        assert headers["slotguard.error"], "the error message header is empty"
    assert dict(dead[0].headers)["slotguard.error.class"] == b"MalformedChange"
    assert {dict(r.headers)["slotguard.error.class"] for r in dead[1:]} == {b"UnsafeKeyPart"}
    assert worker.metric("slotguard_dlq_total", error_class="UnsafeKeyPart") == 2
    assert worker.stop() == 0, f"SIGTERM did not stop the worker cleanly; log:\n{worker.log_tail()}"


def test_a_flood_of_hostile_records_is_dead_lettered_and_valid_changes_between_them_invalidated(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """1,000 hostile records (garbage, overlong and glob tenant ids, wrong types) around 20 valid bookings:
    every hostile one in the DLQ with a reason, every valid one invalidated, no other key touched, the
    worker alive. (The benchmark suite runs the 10,000-record flood.)"""
    hostile = [
        b"\x00garbage",
        b"[]",
        b'{"op": "c", "after": {"id": "x", "company_id": {"nested": 1}}}',
        change("c", None, row(9, starts=BASE, company="1" * 2000)),
        change("c", None, row(9, starts=BASE, company="10" + "0" * 30)),
        change("c", None, row(9, starts=BASE, company="15*")),
        change("c", None, row(9, starts=BASE, branch="1 OR 1")),
        change("c", None, {**row(9, starts=BASE), "starts_at": "not a time"}),
    ]
    valid = {i: window_keys(key_prefix, 15, 1, 123, BASE + timedelta(days=i)) for i in range(20)}
    bystanders = window_keys(key_prefix, 16, 1, 123, BASE) + window_keys(key_prefix, 15, 2, 123, BASE)
    for key in [k for keys in valid.values() for k in keys] + bystanders:
        redis_client.set(key, "cached")
    records: list[tuple[bytes | None, bytes | None, int | None]] = []
    for i in range(1000):
        records.append((b"h", hostile[i % len(hostile)], None))
        if i % 50 == 0:
            n = i // 50
            records.append(
                (str(n).encode(), change("c", None, row(100 + n, starts=BASE + timedelta(days=n))), None)
            )
    produce(dev_stack.kafka_bootstrap, topics.appointments, records)
    worker = start_worker(worker_settings(dev_stack, topics, key_prefix))
    wait_keys_gone(redis_client, [k for keys in valid.values() for k in keys], worker)
    dead = read_topic(dev_stack.kafka_bootstrap, topics.dlq, at_least=1000, timeout=120)
    assert len(dead) == 1000
    assert all(dict(r.headers).get("slotguard.error") for r in dead), "a dead letter without a reason"
    assert still_there(redis_client, bystanders) == bystanders
    assert worker.alive_or_fail()


def test_missing_event_type_widens_to_the_company_from_the_services_topic(
    dev_stack: Any,
    topics: Topics,
    key_prefix: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A service without event type (10) invalidates every event type of its company known from the services
    topic (123 and 124); an unknown service of an unknown company only warns, and the worker goes on."""
    p = key_prefix
    widened = window_keys(p, 15, 1, 123, BASE) + window_keys(p, 15, 1, 124, BASE)
    after = BASE + timedelta(days=1)
    later = window_keys(p, 15, 1, 123, after)
    other_company = window_keys(p, 20, 1, 123, BASE)
    for key in widened + later + other_company:
        redis_client.set(key, "cached")
    produce(
        dev_stack.kafka_bootstrap,
        topics.appointments,
        [(b"1", change("c", None, row(1, starts=BASE, service=10)), None),
         (b"2", change("c", None, row(2, starts=BASE, company=77, service=999)), None),
         (b"3", change("c", None, row(3, starts=after)), None)],
    )  # fmt: skip
    worker = start_worker(worker_settings(dev_stack, topics, key_prefix))

    wait_keys_gone(redis_client, widened + later, worker)
    assert still_there(redis_client, other_company) == other_company
    # Counted when the batch's events are acknowledged, which may be after its keys are gone.
    wait_until(
        lambda: worker.metric("slotguard_unknown_event_types_total") >= 2,
        timeout=30,
        what=lambda: f"unknown_event_types_total {worker.metric('slotguard_unknown_event_types_total')}",
    )
    assert worker.metric("slotguard_unknown_event_types_total") == 2
    health = worker.healthz()
    assert health is not None, "no /healthz"
    assert health[0] == 200
    assert health[1]["status"] == "ok"
    assert health[1]["consumer"] is True
    assert health[1]["redis"] is True


def test_missing_event_type_falls_back_to_postgres(
    dev_stack: Any,
    fresh_database: str,
    unique_name: Callable[[str], str],
    key_prefix: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """With an empty services topic, services are looked up in Postgres (demo service 1 -> 123), and a service
    without event type (4, company 20) widens to the company's event types from Postgres (456)."""
    t = new_topics(unique_name)
    make_topics(dev_stack.kafka_bootstrap, {t.appointments: 1, t.events: 1, t.dlq: 1})
    p = key_prefix
    direct = window_keys(p, 15, 1, 123, BASE)
    widened = window_keys(p, 20, 7, 456, BASE)
    untouched = window_keys(p, 20, 7, 123, BASE)
    for key in direct + widened + untouched:
        redis_client.set(key, "cached")
    produce(
        dev_stack.kafka_bootstrap,
        t.appointments,
        [(b"1", change("c", None, row(1, starts=BASE, company=15, branch=1, service=1)), None),
         (b"2", change("c", None, row(2, starts=BASE, company=20, branch=7, service=4)), None)],
    )  # fmt: skip
    worker = start_worker(worker_settings(dev_stack, t, key_prefix, database_url=fresh_database))

    wait_keys_gone(redis_client, direct + widened, worker)
    assert still_there(redis_client, untouched) == untouched
    # Counted when the batch's events are acknowledged, which may be after its keys are gone.
    wait_until(
        lambda: worker.metric("slotguard_unknown_event_types_total") >= 1,
        timeout=30,
        what=lambda: f"unknown_event_types_total {worker.metric('slotguard_unknown_event_types_total')}",
    )
    assert worker.metric("slotguard_unknown_event_types_total") == 1
