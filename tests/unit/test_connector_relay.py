"""The relay's batch handler (at-least-once) and its start-up checks, without a JVM."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, cast

import pytest
from pydantic import SecretStr

from connectors.errors import DatabaseUrlError, RelayDeliveryError
from connectors.kafka import KafkaSink
from connectors.relay import Relay, RelayStats, _ForwardingHandler
from slotguard.settings import Settings


class FakeEvent:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def destination(self) -> str:
        return self._topic


class FakeSink:
    """Acknowledges every batch, or fails the ones listed in ``fail_batches`` (1-based)."""

    def __init__(self, fail_batches: frozenset[int] = frozenset()) -> None:
        self.fail_batches = fail_batches
        self.batches: list[list[str]] = []

    def send_batch(self, events: Any) -> Counter[str]:
        topics = [event.destination() for event in events]
        self.batches.append(topics)
        if len(self.batches) in self.fail_batches:
            raise RelayDeliveryError("broker said no")
        return Counter(topics)


def _handler(sink: FakeSink) -> tuple[_ForwardingHandler, RelayStats, threading.Event]:
    stats, failed = RelayStats(), threading.Event()
    return _ForwardingHandler(cast(KafkaSink, sink), stats, failed), stats, failed


def test_acknowledged_batches_return_and_are_counted_per_topic() -> None:
    sink = FakeSink()
    handler, stats, failed = _handler(sink)
    handler.handleJsonBatch([FakeEvent("a"), FakeEvent("b"), FakeEvent("a")])
    handler.handleJsonBatch([FakeEvent("b")])
    assert stats.by_topic == Counter({"a": 2, "b": 2})
    assert stats.total == 4
    assert stats.first_record_after is not None
    assert not failed.is_set()


def test_a_failed_batch_raises_so_pydbzengine_does_not_mark_it_processed() -> None:
    sink = FakeSink(fail_batches=frozenset({1}))
    handler, stats, failed = _handler(sink)
    with pytest.raises(RelayDeliveryError, match="broker said no"):
        handler.handleJsonBatch([FakeEvent("a")])
    assert failed.is_set()
    assert stats.total == 0


def test_after_a_failure_later_batches_are_refused_without_being_sent() -> None:
    sink = FakeSink(fail_batches=frozenset({1}))
    handler, _, _ = _handler(sink)
    with pytest.raises(RelayDeliveryError):
        handler.handleJsonBatch([FakeEvent("a")])
    # A later batch must not commit offsets past the lost one, even if Kafka would take it now.
    with pytest.raises(RelayDeliveryError, match="after a failed batch"):
        handler.handleJsonBatch([FakeEvent("b")])
    assert sink.batches == [["a"]]


def test_relay_without_a_database_url_is_a_config_error_before_any_jvm_starts() -> None:
    with pytest.raises(DatabaseUrlError, match="SLOTGUARD_DATABASE_URL"):
        Relay(Settings.model_construct(database_url=None))


def test_start_line_shows_the_dsn_redacted_slot_and_topics() -> None:
    settings = Settings.model_construct(
        database_url=SecretStr("postgresql://app:hunter2@db:5432/bookings"),
        topic_prefix="pfx",
        slot_name="slot_z",
    )
    line = Relay(settings).describe()
    assert "hunter2" not in line
    assert "postgresql://app:***@db:5432/bookings" in line
    assert "slot=slot_z" in line
    assert "pfx.public.appointments" in line
    assert "__debezium-heartbeat.pfx" in line
