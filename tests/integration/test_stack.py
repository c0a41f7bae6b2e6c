"""The local stack's servers really behave as slotguard needs (real Postgres, tansu, Redis; no mocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis

from tests.support.servers import DevStackHandle

pytestmark = pytest.mark.integration


def test_postgres_runs_with_logical_wal_level(pg: psycopg.Connection[tuple[Any, ...]]) -> None:
    row = pg.execute("SHOW wal_level").fetchone()
    assert row == ("logical",)


def test_reference_tables_have_replica_identity_full(pg: psycopg.Connection[tuple[Any, ...]]) -> None:
    rows = pg.execute(
        "SELECT relname, relreplident FROM pg_class WHERE relname IN ('appointments', 'services') ORDER BY 1"
    ).fetchall()
    assert rows == [("appointments", "f"), ("services", "f")]


def test_fresh_database_holds_the_demo_services(pg: psycopg.Connection[tuple[Any, ...]]) -> None:
    rows = pg.execute("SELECT company_id, calcom_event_type_id FROM services ORDER BY id").fetchall()
    assert (15, 123) in rows
    assert (15, 456) in rows
    assert any(event_type is None for _, event_type in rows), "no service without an event type"


def test_new_services_do_not_collide_with_demo_ids(pg: psycopg.Connection[tuple[Any, ...]]) -> None:
    row = pg.execute(
        "INSERT INTO services (company_id, name, duration_minutes) VALUES (15, 'x', 10) RETURNING id"
    ).fetchone()
    assert row is not None
    assert row[0] > 4


def test_each_test_gets_its_own_database(fresh_database: str, dev_stack: DevStackHandle) -> None:
    assert fresh_database != dev_stack.database_url
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0] != "slotguard"


def test_a_replication_slot_can_be_created_in_the_fresh_database(
    pg: psycopg.Connection[tuple[Any, ...]], unique_name: Callable[[str], str]
) -> None:
    slot = unique_name("slot")
    pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    row = pg.execute("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    assert row == ("pgoutput",)


def test_unique_names_are_safe_for_topics_slots_and_groups(unique_name: Callable[[str], str]) -> None:
    first, second = unique_name("My Topic!"), unique_name("My Topic!")
    assert first != second
    for name in (first, second):
        assert name.startswith("my_topic_")
        assert len(name) <= 63
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


async def _produce_and_consume(bootstrap: str, topic: str, group: str) -> tuple[list[bytes], list[bytes]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in (b"one", b"two", b"three"):
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()

    async def consume(limit: int) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            rebalance_timeout_ms=3000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 60
            while len(got) < limit and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=limit - len(got))
                for records in batch.values():
                    got.extend(r.value for r in records if r.value is not None)
            await consumer.commit()
            assert await consumer.committed(TopicPartition(topic, 0)) is not None
            return got
        finally:
            await consumer.stop()

    first = await consume(2)
    rest = await consume(1)
    return first, rest


def test_a_second_group_member_resumes_after_the_committed_offset(
    dev_stack: DevStackHandle, kafka_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = kafka_topic("resume")
    first, rest = asyncio.run(_produce_and_consume(dev_stack.kafka_bootstrap, topic, unique_name("group")))
    assert first == [b"one", b"two"]
    assert rest == [b"three"]


def test_redis_answers_and_keys_stay_under_the_test_prefix(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    assert redis_client.ping()
    redis_client.set(f"{key_prefix}a", "1")
    assert redis_client.get(f"{key_prefix}a") == "1"


def test_settings_point_at_the_stack_with_tansu_friendly_values(dev_stack: DevStackHandle) -> None:
    settings = dev_stack.settings(consumer_group="g1")
    assert settings.kafka_bootstrap == dev_stack.kafka_bootstrap
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == dev_stack.database_url
    assert settings.kafka_enable_idempotence is False
    assert settings.broker_rebalance_timeout == 3
    assert settings.consumer_group == "g1"
    assert settings.data_dir.is_relative_to(dev_stack.data_dir)
