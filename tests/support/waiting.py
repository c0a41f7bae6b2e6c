"""Wait for a condition with a deadline -- never a bare sleep standing in for synchronisation."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is re-checked. Short enough not to add visible latency to a test.
POLL_INTERVAL_S = 0.1


def wait_until(check: Callable[[], T | None], *, timeout: float, what: Callable[[], str] | str) -> T:
    """Poll ``check`` until it returns something truthy and return that.

    On timeout raise :class:`AssertionError` naming ``what`` (called, if callable, so it can describe what
    is *still* missing at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {detail}")
        time.sleep(POLL_INTERVAL_S)
