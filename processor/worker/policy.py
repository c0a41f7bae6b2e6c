"""The worker's failure policy, in one place: what happens when something fails.

| what failed | category | behaviour |
|---|---|---|
| a change cannot be read or would make an unsafe key | :class:`~schemas.errors.InputError` | ``DEAD_LETTER``: its bytes go to the DLQ with the reason; the batch goes on |
| Redis refused the UNLINK | :class:`~processor.worker.errors.RedisUnavailable` | ``RETRY``: backoff until Redis acknowledges; nothing behind it is committed |
| Kafka did not acknowledge a derived event or a dead letter | :class:`~processor.worker.errors.PublishFailed` | ``RETRY``: backoff and resend; nothing behind it is committed (events are at least once, keyed by ``event_id``) |
| the Postgres event-type lookup failed | :class:`~processor.worker.errors.ServiceLookupFailed` | ``DEGRADE``: treated as unknown (the change widens to the company's event types); logged, retried on the next change |
| anything else | a bug | ``CRASH``: the exception ends the worker; ``/healthz`` is 503 and the supervisor restarts it; nothing uncommitted is lost |

Retrying forever is deliberate: a skipped invalidation shows a taken slot as free for the whole TTL, while
a stalled worker only delays invalidations (and says so: ``/healthz`` turns 503 after
``unhealthy_after`` seconds of failing, the retry counters grow). A retry loop ends early only when its
task is cancelled (shutdown or losing the partition), in which case nothing is committed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter

from processor.worker.errors import PublishFailed, RedisUnavailable, ServiceLookupFailed
from schemas.errors import DependencyError, InputError

log = logging.getLogger("slotguard.worker.policy")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Action(enum.Enum):
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    DEGRADE = "degrade"
    CRASH = "crash"


def action_for(exc: BaseException) -> Action:
    """The named behaviour for an error (the table above)."""
    if isinstance(exc, InputError):
        return Action.DEAD_LETTER
    if isinstance(exc, RedisUnavailable | PublishFailed):
        return Action.RETRY
    if isinstance(exc, ServiceLookupFailed):
        return Action.DEGRADE
    return Action.CRASH


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: ``initial * factor**attempt``, at most ``maximum`` seconds."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        # Clamp the exponent so long outages do not overflow the float.
        return float(min(self.maximum, self.initial * self.factor ** min(attempt, 64)))


class FailurePolicy:
    """Runs the worker's dependency calls under the policy; remembers what is failing, for ``/healthz``."""

    def __init__(
        self,
        *,
        retries: Mapping[str, Counter],
        backoffs: dict[str, Backoff] | None = None,
        unhealthy_after: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._retries = retries
        self._backoffs = backoffs or {}
        self._unhealthy_after = unhealthy_after
        self._sleep = sleep
        self._clock = clock
        #: dependency name -> monotonic time it started failing (absent while it works)
        self.failing_since: dict[str, float] = {}

    async def retry(self, dependency: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``RETRY``: call ``attempt`` until it succeeds; a non-retryable error propagates unchanged."""
        backoff = self._backoffs.get(dependency, Backoff())
        tries = 0
        while True:
            try:
                result = await attempt()
            except DependencyError as exc:
                if action_for(exc) is not Action.RETRY:
                    raise
                delay = backoff.delay(tries)
                tries += 1
                self.failing_since.setdefault(dependency, self._clock())
                self._count(dependency)
                log.warning(
                    "%s failed, retrying",
                    dependency,
                    extra={"error": str(exc), "attempt": tries, "retry_in_s": round(delay, 3)},
                )
                await self._sleep(delay)
                continue
            if self.failing_since.pop(dependency, None) is not None:
                log.info("%s recovered", dependency, extra={"attempts": tries + 1})
            return result

    async def degrade(self, dependency: str, attempt: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``DEGRADE``: one try; on a dependency error log it and return ``fallback``."""
        try:
            result = await attempt()
        except DependencyError as exc:
            if action_for(exc) is not Action.DEGRADE:
                raise
            self._count(dependency)
            log.warning("%s failed, continuing without it", dependency, extra={"error": str(exc)})
            return fallback
        return result

    def _count(self, dependency: str) -> None:
        counter = self._retries.get(dependency)
        if counter is not None:
            counter.inc()

    def unhealthy(self) -> list[str]:
        """Dependencies that have been failing for longer than ``unhealthy_after`` seconds."""
        now = self._clock()
        return sorted(d for d, since in self.failing_since.items() if now - since >= self._unhealthy_after)
