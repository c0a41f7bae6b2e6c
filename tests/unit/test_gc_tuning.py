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


def test_the_worker_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    gc.unfreeze()
    worker.tune_gc()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == worker.GC_YOUNG_THRESHOLD
