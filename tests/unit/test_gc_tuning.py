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


def test_the_worker_collects_the_young_at_most_every_few_thousand_allocations() -> None:
    """Each young collection stops the event loop: at 50,000 allocations they took up to 94 ms."""
    worker.tune_gc()
    young = gc.get_threshold()[0]
    assert 700 < young <= 10_000
    assert gc.get_freeze_count() > 0
