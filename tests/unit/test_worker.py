"""Unit tests of the worker's pieces that need no servers: UNLINK, caches, DLQ headers, the batch handler."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from processor.core.resolver import InMemoryResolver, ServiceInfo
from processor.worker.dlq import SourceRecord, dead_letter_headers
from processor.worker.errors import PublishFailed, RedisUnavailable
from processor.worker.handler import BatchHandler
from processor.worker.invalidator import RedisInvalidator
from processor.worker.metrics import WorkerMetrics
from processor.worker.policy import Backoff, FailurePolicy
from processor.worker.publisher import Keyed
from processor.worker.resolution import LayeredResolver, TtlCache
from schemas.connections import RedisConnection
from slotguard.settings import Settings
from slotguard.wiring import core_config, worker_config
from tests.support.changes import appointment, encode, envelope

#: An invalidator that only unlinks: no second delete, guard announcement or lease revocation.
PLAIN_UNLINK: dict[str, Any] = {
    "second_delete_after": 0.0,
    "key_prefix": "",
    "guard_window": 0.0,
    "revoke_leases": False,
    "wait_replicas": 0,
    "wait_timeout": 1.0,
}


class _Pipe:
    def __init__(self, client: _FlakyRedis) -> None:
        self._client = client
        self._commands: list[tuple[str, ...]] = []

    async def __aenter__(self) -> _Pipe:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None

    def unlink(self, *keys: str) -> None:
        self._commands.append(keys)

    async def execute(self) -> list[int]:
        self._client.calls += 1
        if self._client.failures_left:
            self._client.failures_left -= 1
            raise RedisConnectionError("Connection refused")
        self._client.unlinked.append([k for c in self._commands for k in c])
        return [len(c) for c in self._commands]


class _FlakyRedis:
    """Stands in for redis.asyncio.Redis: fails ``failures`` times, then unlinks (every key existed)."""

    def __init__(self, failures: int) -> None:
        self.failures_left = failures
        self.calls = 0
        self.unlinked: list[list[str]] = []

    def pipeline(self, transaction: bool = True) -> _Pipe:
        return _Pipe(self)


def _policy(metrics: WorkerMetrics, waits: list[float] | None = None) -> FailurePolicy:
    async def fake_sleep(delay: float) -> None:
        if waits is not None:
            waits.append(delay)

    return FailurePolicy(
        retries={
            "redis": metrics.redis_retries,
            "kafka": metrics.publish_retries,
            "postgres": metrics.lookup_failures,
        },
        backoffs={"redis": Backoff(initial=0.1, maximum=0.25), "kafka": Backoff(initial=0.1, maximum=0.25)},
        unhealthy_after=30.0,
        sleep=fake_sleep,
    )


def test_unlink_under_the_policy_retries_with_capped_backoff_until_redis_answers() -> None:
    """Redis refusing three times costs three retries (0.1, 0.2, 0.25 s waits), then one pipelined UNLINK."""
    waits: list[float] = []
    client = _FlakyRedis(failures=3)
    metrics = WorkerMetrics()
    invalidator = RedisInvalidator(
        RedisConnection.parse("redis://:secret@127.0.0.1:1/0"),
        metrics=metrics,
        client=cast(Any, client),
        **PLAIN_UNLINK,
    )
    deleted = asyncio.run(_policy(metrics, waits).retry("redis", lambda: invalidator.unlink(["a", "b", "c"])))
    assert deleted == 3
    assert waits == [0.1, 0.2, 0.25]
    assert client.unlinked == [["a", "b", "c"]]
    assert metrics.registry.get_sample_value("slotguard_redis_retries_total") == 3


def test_unlink_error_message_never_shows_the_password() -> None:
    invalidator = RedisInvalidator(
        RedisConnection.parse("redis://:hunter2@127.0.0.1:1/0"),
        metrics=WorkerMetrics(),
        client=cast(Any, _FlakyRedis(failures=1)),
        **PLAIN_UNLINK,
    )
    with pytest.raises(RedisUnavailable) as info:
        asyncio.run(invalidator.unlink(["k"]))
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_ttl_cache_expires_entries_and_caches_negative_answers() -> None:
    now = [100.0]
    cache: TtlCache[str | None] = TtlCache(30.0, clock=lambda: now[0])
    cache.put("7", None)
    assert cache.get("7") == (True, None)
    now[0] += 30.0
    assert cache.get("7") == (False, None)


def test_layered_resolver_prefers_the_feed_and_names_what_postgres_must_answer() -> None:
    local = InMemoryResolver([ServiceInfo("7", "15", "123")])
    resolver = LayeredResolver(local, lookup=cast(Any, object()), ttl=30.0)
    assert resolver.service("7") == ServiceInfo("7", "15", "123")
    assert resolver.service("8") is None
    assert resolver.event_types_of_company("15") == ["123"]
    assert resolver.unknown_services({"7", "8"}) == {"8"}
    assert resolver.unknown_companies({"15"}) == {"15"}
    resolver.services_cache.put("8", None)  # a negative answer counts as known
    assert resolver.unknown_services({"7", "8"}) == set()
    resolver.companies_cache.put("15", ("456",))
    assert resolver.event_types_of_company("15") == ["123", "456"]


def test_dead_letter_headers_name_error_and_origin_and_replace_old_slotguard_headers() -> None:
    record = SourceRecord("t", 2, 17, b"k", b"v", (("trace", b"1"), ("slotguard.error", b"old")))
    headers = dead_letter_headers(record, ValueError("bad\nthing"))
    assert headers == [
        ("trace", b"1"),
        ("slotguard.error", b"bad thing"),
        ("slotguard.error.class", b"ValueError"),
        ("slotguard.topic", b"t"),
        ("slotguard.partition", b"2"),
        ("slotguard.offset", b"17"),
    ]


class _Invalidator:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def unlink(self, keys: Sequence[str]) -> int:
        self.calls.append(list(keys))
        return len(keys)


class _Publisher:
    """Records sends; the first ``failures`` flushes fail as Kafka not acknowledging would."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.flushed = 0
        self.failures = failures

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        self.sent.append((topic, key, value, list(headers)))

    async def send_many(self, topic: str, records: Iterable[Keyed]) -> None:
        self.sent.extend((topic, r.key, r.value, []) for r in records)

    async def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishFailed("Kafka did not acknowledge a record: KafkaTimeoutError")
        self.flushed += 1


def _handler(
    settings: Settings, invalidator: _Invalidator, publisher: _Publisher, metrics: WorkerMetrics, **kw: Any
) -> BatchHandler:
    resolver = LayeredResolver(InMemoryResolver([ServiceInfo("7", "15", "123")]), lookup=None, ttl=0)
    return BatchHandler(
        config=core_config(settings),
        resolver=resolver,
        invalidator=invalidator,
        publisher=publisher,
        policy=_policy(metrics),
        metrics=metrics,
        events_topic="events",
        dlq_topic="dlq",
        max_record_bytes=settings.max_record_bytes,
        **kw,
    )


def _booked(appointment_id: int, company: object = 15) -> bytes:
    after = appointment(id=appointment_id, company_id=company, status="scheduled")
    ts = int(datetime(2025, 10, 15, 12, tzinfo=UTC).timestamp() * 1000)
    return encode(envelope("c", after=after, lsn=appointment_id, ts_ms=ts))


def test_a_batch_unlinks_once_publishes_events_and_dead_letters_bad_records() -> None:
    """Two bookings in one window and one injection attempt: one UNLINK of the three keys, two events keyed
    by appointment id, one dead letter; latency is observed from source.ts_ms to the unlink."""
    invalidator, publisher, metrics = _Invalidator(), _Publisher(), WorkerMetrics()
    processor = _handler(
        Settings(redis_key_prefix="p:"),
        invalidator,
        publisher,
        metrics,
        clock=lambda: datetime(2025, 10, 15, 12, 0, 2, tzinfo=UTC).timestamp(),
    )
    records = [
        SourceRecord("appts", 0, 0, b"1", _booked(1)),
        SourceRecord("appts", 0, 1, b"x", _booked(3, company="15*")),
        SourceRecord("appts", 0, 2, b"2", _booked(2)),
    ]
    result = asyncio.run(processor.handle(records))

    assert invalidator.calls == [
        [
            "p:cal_slots_15_1_123_2025-10-15-13_2025-10-15-14",
            "p:cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
            "p:cal_slots_15_1_123_2025-10-15-15_2025-10-15-16",
        ]
    ]
    assert [(t, k) for t, k, _, _ in publisher.sent] == [("events", b"1"), ("dlq", b"x"), ("events", b"2")]
    dlq = next(s for s in publisher.sent if s[0] == "dlq")
    assert dlq[2] == records[1].value
    assert dict(dlq[3])["slotguard.error.class"] == b"UnsafeKeyPart"
    assert (result.changes, result.dead_lettered, result.events, result.total_keys) == (3, 1, 2, 3)
    assert metrics.registry.get_sample_value("slotguard_commit_to_delete_seconds_sum") == pytest.approx(4.0)


class _Records(list[SourceRecord]):
    """A batch's records that a weak reference can watch."""


def test_a_batch_with_dead_letters_is_freed_without_the_cycle_collector() -> None:
    """The worker collects cycles by the clock: a dead letter's error must not tie its batch into one."""
    processor = _handler(Settings(), _Invalidator(), _Publisher(), WorkerMetrics())
    records = _Records(
        [
            SourceRecord("appts", 0, 0, b"x", b"{not json"),  # the core's read refuses it
            SourceRecord("appts", 0, 1, b"y", _booked(3, company="15*")),  # its derive refuses it
            SourceRecord("appts", 0, 2, b"1", _booked(1)),
        ]
    )
    batch = weakref.ref(records)
    gc.disable()
    try:
        result = asyncio.run(processor.handle(records))
        del records
        assert batch() is None
    finally:
        gc.enable()
    assert result.dead_lettered == 2


def test_a_notes_only_batch_touches_neither_redis_nor_kafka() -> None:
    invalidator, publisher = _Invalidator(), _Publisher()
    processor = _handler(Settings(), invalidator, publisher, WorkerMetrics())
    row = orjson.loads(_booked(1))["after"]
    value = orjson.dumps({"before": row, "after": {**row, "notes": "x"}, "op": "u", "source": {"ts_ms": 1}})
    result = asyncio.run(processor.handle([SourceRecord("appts", 0, 0, b"1", value)]))
    assert invalidator.calls == []
    assert publisher.sent == []
    assert result.total_keys == 0


def test_json_log_lines_carry_the_extra_fields() -> None:
    import logging

    from slotguard.logs import JsonFormatter

    record = logging.LogRecord(
        "slotguard.worker", logging.INFO, __file__, 1, "cache invalidation complete", (), None
    )
    record.keys_deleted = 3
    record.total_keys = 3
    line = orjson.loads(JsonFormatter().format(record))
    assert line["msg"] == "cache invalidation complete"
    assert (line["keys_deleted"], line["total_keys"], line["level"]) == (3, 3, "INFO")


def test_each_app_has_its_own_metrics_registry() -> None:
    """Two apps in one process do not collide on metric names (no global registry)."""
    first, second = WorkerMetrics(), WorkerMetrics()
    first.keys_deleted.inc(2)
    assert b"slotguard_keys_deleted_total 2.0" in first.render()
    assert b"slotguard_keys_deleted_total 0.0" in second.render()


def test_a_failed_publish_is_retried_and_the_batch_returns_only_once_kafka_acknowledged() -> None:
    """Kafka refusing the first flush: the batch's events are sent again and flushed; never skipped."""
    invalidator, publisher, metrics = _Invalidator(), _Publisher(failures=2), WorkerMetrics()
    processor = _handler(Settings(), invalidator, publisher, metrics)
    asyncio.run(processor.handle([SourceRecord("appts", 0, 0, b"1", _booked(1))]))
    assert publisher.flushed == 1
    assert [t for t, *_ in publisher.sent] == ["events", "events", "events"]  # sent once per attempt
    assert metrics.registry.get_sample_value("slotguard_publish_retries_total") == 2


def test_an_unexpected_error_in_a_batch_propagates_and_nothing_is_published() -> None:
    """A bug (not an input or dependency error) crashes the batch: the consumer never commits it."""

    class _Broken(_Invalidator):
        async def unlink(self, keys: Sequence[str]) -> int:
            raise ZeroDivisionError("bug")

    publisher = _Publisher()
    processor = _handler(Settings(), _Broken(), publisher, WorkerMetrics())
    with pytest.raises(ZeroDivisionError):
        asyncio.run(processor.handle([SourceRecord("appts", 0, 0, b"1", _booked(1))]))
    assert publisher.sent == []


def test_create_app_builds_independent_apps_from_their_configs() -> None:
    """The factory reads only the configuration it is given: two apps, two groups, two metric registries."""
    from processor.worker.app import create_app

    s1 = Settings(consumer_group="g1", web_port=7001, kafka_bootstrap="h1:1,h2:2")
    s2 = Settings(consumer_group="g2", web_port=7002, kafka_enable_idempotence=False)
    one = create_app(worker_config(s1), core_config(s1))
    two = create_app(worker_config(s2), core_config(s2))
    assert (one.conf.id, two.conf.id) == ("g1", "g2")
    assert [str(u) for u in one.conf.broker] == ["kafka://h1:1", "kafka://h2:2"]
    assert one.conf.web_port == 7001
    assert one.slotguard.metrics.registry is not two.slotguard.metrics.registry
    assert one.slotguard.config.enable_idempotence
    assert not two.slotguard.config.enable_idempotence
