"""The core's throughput per change -- keys only (events made lazily, as the worker makes them when it
publishes), with the event JSON made too, and the reference path alone -- and ``orjson.loads`` alone as the
floor of any decoder."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import orjson

from processor.core.config import CoreConfig
from processor.core.derive import process_change, reference_outcome
from processor.core.resolver import InMemoryResolver, ServiceInfo
from slotguard.bench.workload import SERVICE_MAP


def resolver() -> InMemoryResolver:
    return InMemoryResolver(ServiceInfo(str(s), str(c), str(e)) for s, (c, e) in SERVICE_MAP.items())


def _best_rate(values: Sequence[bytes], each: Callable[[bytes], object], rounds: int) -> float:
    """Values per second through ``each``, best of ``rounds`` (one core)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for value in values:
            each(value)
        best = min(best, time.perf_counter() - start)
    return len(values) / best


def core_rate(values: Sequence[bytes], config: CoreConfig, rounds: int = 3, *, events: bool = False) -> float:
    """Changes per second through :func:`process_change`, best of ``rounds`` (one core); with ``events``
    each event's JSON is made as well (what the worker publishes)."""
    res = resolver()

    def with_events(value: bytes) -> None:
        for record in process_change(value, config, res).records:
            record.value  # noqa: B018 -- made on first access

    return _best_rate(values, with_events if events else lambda v: process_change(v, config, res), rounds)


def reference_rate(values: Sequence[bytes], config: CoreConfig, rounds: int = 1) -> float:
    """Changes per second through the reference path alone (events included)."""
    res = resolver()
    return _best_rate(values, lambda v: reference_outcome(v, config, res), rounds)


def orjson_rate(values: Sequence[bytes], rounds: int = 3) -> float:
    return _best_rate(values, orjson.loads, rounds)
