"""Fixtures shared by the worker-level integration tests (the servers themselves come from
``tests.support.servers``): unique topics with a known service, workers stopped at the end, the settings
of a deployment exported to this process for the CLI commands under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from slotguard.settings import Settings, settings_to_env
from tests.integration.worker_harness import (
    Topics,
    WorkerProcess,
    make_topics,
    new_topics,
    produce,
    service_change,
)


@pytest.fixture
def topics(dev_stack: Any, unique_name: Callable[[str], str]) -> Topics:
    """Unique topic names; services, events and DLQ created (one partition each), service 7 of company 15
    mapped to event type 123. Each test creates the appointments topic with the partitions it needs."""
    t = new_topics(unique_name)
    make_topics(dev_stack.kafka_bootstrap, {t.services: 1, t.events: 1, t.dlq: 1})
    produce(dev_stack.kafka_bootstrap, t.services, [(b"7", service_change(7, 15, 123), None)])
    return t


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts (append them); each is stopped when the test ends."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


@pytest.fixture
def env_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[Settings], None]:
    """Export a deployment's settings as SLOTGUARD_* for the CLI commands a test runs in-process."""

    def use(settings: Settings) -> None:
        for key, value in settings_to_env(settings).items():
            monkeypatch.setenv(key, value)

    return use
