"""The keyspace guard's bookkeeping: which writes after an invalidation may be stale."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.keys import glob_escape
from processor.worker.guard import FillTracker, KeyspaceGuard, missing_flags
from processor.worker.leases import LEASE_SUFFIX
from processor.worker.metrics import WorkerMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracker(ttl: float = 2.0, *, precise: bool = True) -> tuple[FillTracker, Clock]:
    clock = Clock()
    return FillTracker(ttl, precise=precise, clock=clock), clock


def test_a_write_from_a_reader_that_missed_before_the_invalidation_is_deleted() -> None:
    t, _ = tracker()
    t.missed("k")
    t.invalidated("k")
    assert t.written("k") is True


def test_a_write_after_an_invalidation_nobody_was_filling_for_is_left_alone() -> None:
    t, _ = tracker()
    t.invalidated("k")
    t.missed("k")  # a fresh reader, after the delete
    assert t.written("k") is False


def test_once_every_reader_out_at_the_invalidation_has_written_later_writes_stay() -> None:
    t, _ = tracker()
    t.missed("k")
    t.invalidated("k")
    assert t.written("k") is True
    t.missed("k")
    assert t.written("k") is False


def test_a_fresh_write_landing_before_the_old_readers_is_deleted_and_so_is_the_old_one() -> None:
    t, _ = tracker()
    t.missed("k")  # old reader, slow
    t.invalidated("k")
    t.missed("k")  # fresh reader, fast
    assert t.written("k") is True  # the fresh one: cannot be told apart, deleted (one extra miss)
    assert t.written("k") is True  # the old one: stale, deleted
    assert t.written("k") is False


def test_writes_after_the_window_closed_are_left_alone() -> None:
    t, clock = tracker(ttl=2.0)
    t.missed("k")
    t.invalidated("k")
    clock.now += 2.0
    assert t.written("k") is False


def test_without_miss_events_every_write_within_the_window_is_suspect() -> None:
    t, clock = tracker(ttl=2.0, precise=False)
    t.invalidated("k")
    assert t.written("k") is True
    assert t.written("k") is True
    clock.now += 2.0
    assert t.written("k") is False


def test_other_keys_are_not_affected() -> None:
    t, _ = tracker()
    t.missed("k")
    t.invalidated("k")
    t.missed("j")
    assert t.written("j") is False


def test_prune_forgets_readers_that_never_wrote_and_expired_watches() -> None:
    t, clock = tracker(ttl=2.0)
    t.missed("k")
    t.missed("j")
    t.invalidated("j")
    clock.now += 31.0
    t.prune()
    assert len(t) == 0


def test_missing_flags_name_what_the_guard_needs() -> None:
    assert missing_flags("") == "K$m"
    assert missing_flags("KEA") == "m"
    assert missing_flags("Kg$m") == ""


def test_glob_escape_makes_a_prefix_literal() -> None:
    assert glob_escape("app[1]*:?") == "app\\[1\\]\\*:\\?"


class FakeRedis:
    """Enough of redis.asyncio.Redis for the guard's event handling: records what it unlinks."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.connection_pool: Any = type("Pool", (), {"connection_kwargs": {"db": 3}})()

    async def unlink(self, key: str) -> int:
        self.deleted.append(key)
        return 1


def test_the_guard_follows_misses_announcements_and_writes_and_ignores_leases() -> None:
    fake = FakeRedis()
    guard = KeyspaceGuard(
        fake,  # type: ignore[arg-type]
        prefix="app:",
        channel="app:slotguard:invalidated",
        window=2.0,
        metrics=WorkerMetrics(),
    )
    assert guard.pattern == "__keyspace@3__:app:*"

    async def play() -> None:
        await guard.handle("app:k", b"keymiss")
        await guard.handle("app:j", b"keymiss")
        await guard.handle("app:k" + LEASE_SUFFIX, b"set")
        guard.announced(b'["app:k", "app:other"]')
        guard.announced(b"not json")
        await guard.handle("app:k", b"set")  # the slow reader: deleted
        await guard.handle("app:k", b"set")  # after it: left alone
        await guard.handle("app:j", b"set")  # never invalidated: left alone

    asyncio.run(play())
    assert fake.deleted == ["app:k"]


def test_an_announcement_while_nobody_fills_is_not_even_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Precise and idle: nothing to do, so the keys are not parsed; without key misses every write after an
    invalidation is suspect, so they are."""
    guard = KeyspaceGuard(
        FakeRedis(),  # type: ignore[arg-type]
        prefix="app:",
        channel="app:slotguard:invalidated",
        window=2.0,
        metrics=WorkerMetrics(),
    )
    parsed: list[bytes] = []
    real_loads = orjson.loads

    def loads(payload: bytes) -> Any:
        parsed.append(payload)
        return real_loads(payload)

    monkeypatch.setattr("processor.worker.guard.orjson.loads", loads)
    guard.announced(b'["app:k"]')
    assert parsed == []
    assert len(guard.tracker) == 0
    guard.tracker.precise = False
    guard.announced(b'["app:k"]')
    assert parsed == [b'["app:k"]']
    assert len(guard.tracker) == 1


_KEYS = st.sampled_from(["a", "b", "c"])
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["missed", "written", "announced", "tick", "prune", "toggle"]),
        st.lists(_KEYS, max_size=4),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(steps=_STEPS, precise=st.booleans())
def test_an_announcement_at_once_tracks_as_its_keys_one_by_one(
    steps: list[tuple[str, list[str]]], precise: bool
) -> None:
    """invalidated_many (the announcement path) leaves the tracker as invalidated per key would, and later
    writes are judged the same, whatever misses, writes, announcements, pruning and changes of precision
    (the guard reconnecting to a server that does or does not publish misses) came before."""
    one, one_clock = tracker(precise=precise)
    many, many_clock = tracker(precise=precise)
    verdicts: tuple[list[bool], list[bool]] = ([], [])
    for step, keys in steps:
        if step == "tick":
            one_clock.now += 0.7 * (1 + 20 * len(keys))
            many_clock.now = one_clock.now
        elif step == "prune":
            one.prune()
            many.prune()
        elif step == "toggle":
            one.precise = many.precise = not one.precise
        for key in keys if step in ("missed", "written") else ():
            if step == "missed":
                one.missed(key)
                many.missed(key)
            elif step == "written":
                verdicts[0].append(one.written(key))
                verdicts[1].append(many.written(key))
        if step == "announced":
            for key in keys:
                one.invalidated(key)
            many.invalidated_many(keys)
    assert verdicts[0] == verdicts[1]
    assert one._pending == many._pending
    assert one._watches == many._watches
