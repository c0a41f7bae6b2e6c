"""The worker's event loop follows ``SLOTGUARD_EVENT_LOOP``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from schemas.errors import ConfigError
from slotguard.commands.worker import use_event_loop
from slotguard.settings import load_settings


@pytest.fixture(autouse=True)
def _default_policy_after() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


def _loop_made() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.close()
    return loop


def test_the_worker_runs_on_uvloop_by_default() -> None:
    use_event_loop(load_settings().event_loop)

    assert isinstance(_loop_made(), uvloop.Loop)


def test_asyncio_gives_the_standard_librarys_loop_back() -> None:
    use_event_loop("uvloop")
    use_event_loop("asyncio")

    assert not isinstance(_loop_made(), uvloop.Loop)


def test_an_unknown_loop_is_a_settings_error() -> None:
    with pytest.raises(ConfigError, match="SLOTGUARD_EVENT_LOOP: Input should be 'uvloop' or 'asyncio'"):
        load_settings(event_loop="trio")
