"""The worker's failure policy, in one place: what happens when something fails.

| what failed | category | behaviour |
|---|---|---|
| a change cannot be read or would make an unsafe key | :class:`~schemas.errors.InputError` | ``DEAD_LETTER``: its bytes go to the DLQ with the reason; the batch goes on |
| any other exception while one record is read, derived or its events encoded (``RecursionError``, ``MemoryError``, ``ValueError`` from a library, a bug) | the record | ``DEAD_LETTER``, as :class:`~processor.worker.errors.RecordFailed` naming the exception's class (:func:`record_error`) |
| the worker died on the same record ``crash_loop_after`` times in a row (a crash nothing can catch) | the record | ``DEAD_LETTER`` on the next start, as :class:`~processor.worker.errors.CrashLoop` (:mod:`processor.worker.crashloop`) |
| Redis refused the UNLINK | :class:`~processor.worker.errors.RedisUnavailable` | ``RETRY``: backoff until Redis acknowledges; nothing behind it is committed |
| Kafka did not acknowledge a derived event or a dead letter | :class:`~processor.worker.errors.PublishFailed` | ``RETRY``: backoff and resend; nothing behind it is committed (events are at least once, keyed by ``event_id``) |
| the Postgres event-type lookup failed | :class:`~processor.worker.errors.ServiceLookupFailed` | ``DEGRADE``: treated as unknown (the change widens to the company's event types); logged, retried on the next change |
| anything else outside one record's handling, and every ``BaseException`` that is not an ``Exception`` (cancellation, ``SystemExit``) | the worker | ``CRASH``: the exception ends the worker; ``/healthz`` is 503 and the supervisor restarts it; nothing uncommitted is lost |

Nothing a record contains may stop the worker or hold its partition: the only errors that hold a partition
are a dependency's (retried), and a record's own failures are dead-lettered whatever their type.

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

from processor.worker.errors import PublishFailed, RecordFailed, RedisUnavailable, ServiceLookupFailed
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


def action_for(exc: BaseException, *, in_record: bool = False) -> Action:
    """The named behaviour for an error (the table above); ``in_record``: raised while one record was
    read, derived or its events encoded."""
    if isinstance(exc, InputError):
        return Action.DEAD_LETTER
    if isinstance(exc, RedisUnavailable | PublishFailed):
        return Action.RETRY
    if isinstance(exc, ServiceLookupFailed):
        return Action.DEGRADE
    if in_record and isinstance(exc, Exception) and not isinstance(exc, DependencyError):
        return Action.DEAD_LETTER
    return Action.CRASH


def record_error(exc: BaseException) -> InputError:
    """What goes to the dead-letter topic for an exception raised while one record was handled: the
    :class:`InputError` itself, or a :class:`RecordFailed` naming the exception's class and first line.
    Re-raises what is not the record's to answer for (a dependency's error, cancellation)."""
    if action_for(exc, in_record=True) is not Action.DEAD_LETTER:
        raise exc
    if isinstance(exc, InputError):
        return exc
    return RecordFailed.of(exc)


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
        unhealthy_after: float,
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
