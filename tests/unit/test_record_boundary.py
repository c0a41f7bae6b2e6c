"""The worker's per-record boundary and crash-loop breaker, with fakes for Kafka and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

import processor.worker.handler as handler_module
from processor.core.read import ReadChange
from processor.worker.crashloop import CrashJournal
from processor.worker.dlq import SourceRecord
from processor.worker.metrics import WorkerMetrics
from slotguard.settings import Settings
from tests.support.changes import appointment, encode, envelope, with_schema
from tests.unit.test_worker import _booked, _handler, _Invalidator, _Publisher


class _Hash:
    """Stands in for the Redis hash of the crash journal."""

    def __init__(self, fields: Mapping[str, bytes] | None = None) -> None:
        self.fields: dict[str, bytes] = dict(fields or {})
        self.writes: list[dict[str, Any]] = []

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {k.encode(): v for k, v in self.fields.items()}

    async def hset(self, key: str, mapping: Mapping[str, bytes]) -> int:
        self.writes.append(dict(mapping))
        self.fields.update(mapping)
        return len(mapping)

    async def hdel(self, key: str, *fields: str) -> int:
        for f in fields:
            self.fields.pop(f, None)
        return len(fields)


def _wrapped_booking(appointment_id: int) -> bytes:
    return encode(with_schema(envelope("c", after=appointment(id=appointment_id))))


def test_any_exception_from_deriving_one_record_dead_letters_it_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = handler_module.derive  # type: ignore[attr-defined]

    def derive(read: ReadChange, *args: Any) -> Any:
        after = read.classification.after if read.classification is not None else None
        if after is not None and after.id == "2":
            raise AttributeError("'NoneType' object has no attribute 'company_id'\nsecond line")
        return real(read, *args)

    monkeypatch.setattr(handler_module, "derive", derive)
    publisher, metrics = _Publisher(), WorkerMetrics()
    handler = _handler(Settings(), _Invalidator(), publisher, metrics)
    records = [
        SourceRecord("appts", 0, 0, b"1", _booked(1)),
        SourceRecord("appts", 0, 1, b"2", _wrapped_booking(2)),
        SourceRecord("appts", 0, 2, b"3", _wrapped_booking(3)),
    ]
    result = asyncio.run(handler.handle(records))

    assert [(t, k) for t, k, _, _ in publisher.sent] == [("events", b"1"), ("dlq", b"2"), ("events", b"3")]
    headers = dict(next(s for s in publisher.sent if s[0] == "dlq")[3])
    assert headers["slotguard.error.class"] == b"AttributeError"
    assert headers["slotguard.error"] == b"AttributeError: 'NoneType' object has no attribute 'company_id'"
    assert result.dead_lettered == 1
    assert metrics.registry.get_sample_value("slotguard_dlq_total", {"error_class": "AttributeError"}) == 1


def test_a_batch_is_marked_while_it_is_derived_and_unmarked_after() -> None:
    redis = _Hash()
    journal = CrashJournal(redis, key_prefix="p:", group="g", after=3)  # type: ignore[arg-type]
    handler = _handler(Settings(), _Invalidator(), _Publisher(), WorkerMetrics(), journal=journal)
    records = [SourceRecord("appts", 0, 7, b"1", _booked(1)), SourceRecord("appts", 0, 8, b"2", _booked(2))]
    asyncio.run(handler.handle(records))
    assert redis.writes == [{"appts:0": orjson.dumps([7, 8, 0])}]
    assert redis.fields == {}


def test_records_a_dead_worker_was_handling_are_retried_one_at_a_time_until_one_has_killed_it_enough() -> (
    None
):
    """A mark left by a worker that died: the records under it are derived one by one, each marked alone;
    the one already blamed for two deaths (its third now) is dead-lettered, the others are handled."""
    redis = _Hash({"appts:0": orjson.dumps([8, 8, 2])})
    journal = CrashJournal(redis, key_prefix="p:", group="g", after=3)  # type: ignore[arg-type]
    publisher, metrics = _Publisher(), WorkerMetrics()
    handler = _handler(Settings(), _Invalidator(), publisher, metrics, journal=journal)
    records = [SourceRecord("appts", 0, n, str(n).encode(), _booked(n)) for n in (7, 8, 9)]
    asyncio.run(handler.handle(records))

    assert [(t, k) for t, k, _, _ in publisher.sent] == [("events", b"7"), ("dlq", b"8"), ("events", b"9")]
    assert dict(publisher.sent[1][3])["slotguard.error"] == b"crashed the worker 3 times"
    assert redis.writes == [{"appts:0": orjson.dumps([7, 7, 0])}, {"appts:0": orjson.dumps([9, 9, 0])}]
    assert redis.fields == {}
    assert metrics.registry.get_sample_value("slotguard_crash_loop_dead_letters_total") == 1


def test_a_record_blamed_for_fewer_deaths_is_handled_and_its_death_count_goes_on() -> None:
    redis = _Hash({"appts:0": orjson.dumps([7, 9, 0])})
    journal = CrashJournal(redis, key_prefix="p:", group="g", after=3)  # type: ignore[arg-type]
    publisher = _Publisher()
    handler = _handler(Settings(), _Invalidator(), publisher, WorkerMetrics(), journal=journal)
    records = [SourceRecord("appts", 0, n, str(n).encode(), _booked(n)) for n in (7, 8, 9, 10)]
    asyncio.run(handler.handle(records))

    assert [t for t, *_ in publisher.sent] == ["events"] * 4
    # Each suspect carries the one death the batch's mark put down to it; offset 10 was not under it.
    assert redis.writes == [
        {"appts:0": orjson.dumps([7, 7, 1])},
        {"appts:0": orjson.dumps([8, 8, 1])},
        {"appts:0": orjson.dumps([9, 9, 1])},
        {"appts:0": orjson.dumps([10, 10, 0])},
    ]
    assert not journal.suspected(records)
