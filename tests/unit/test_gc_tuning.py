"""The collector settings of the two long-running commands: what they promise, checked on this process."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from slotguard.commands import relay, worker


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_the_relay_freezes_what_exists_so_jpypes_full_collections_walk_only_what_came_since() -> None:
    gc.unfreeze()
    relay.freeze_heap()
    assert gc.get_freeze_count() > 0
    assert len(gc.get_objects()) < gc.get_freeze_count()  # the young and old generations: near empty


def test_the_relay_freezes_again_until_it_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "REFREEZE_INTERVAL_S", 0.001)
    stopped = threading.Event()
    freezes: list[int] = []

    def freeze() -> None:
        freezes.append(1)
        if len(freezes) == 3:
            stopped.set()

    monkeypatch.setattr(relay, "freeze_heap", freeze)
    relay._refreeze(stopped)  # returns once stopped
    assert len(freezes) == 3


def test_the_worker_turns_automatic_collection_off_and_collects_on_a_timer_until_stopped() -> None:
    """Automatic collections walked every change a batch keeps alive, many times over (docs/worker.md)."""
    collections: list[int] = []
    enough = threading.Event()  # tune_gc's own full collection, then a full minute's worth of ticks

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["generation"])
            if len(collections) >= 1 + worker.GC_FULL_EVERY:
                enough.set()

    stop = threading.Event()
    gc.callbacks.append(count)
    try:
        thread = worker.tune_gc(stop, interval=0.001)
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert enough.wait(10), f"{len(collections)} timed collections in 10 s"
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        timed = collections[1 : 1 + worker.GC_FULL_EVERY]
        assert timed[:10] == [0] * 9 + [1], "the young every tick, the middle every tenth"
        assert timed[-1] == 2, "all of them every sixtieth"
    finally:
        stop.set()
        gc.callbacks.remove(count)
        gc.enable()


def test_the_worker_collects_every_generation_once_a_minute_the_middle_every_ten_seconds() -> None:
    """The caches' long-lived objects are walked by the full collections only: ~40,000 took up to 125 ms."""
    due = [worker.generation_due(tick) for tick in range(1, 121)]
    assert [tick for tick, generation in enumerate(due, 1) if generation == 2] == [60, 120]
    assert [tick for tick, generation in enumerate(due, 1) if generation == 1] == [
        10, 20, 30, 40, 50, 70, 80, 90, 100, 110,
    ]  # fmt: skip
