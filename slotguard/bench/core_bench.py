"""The core's throughput: read + derive per change, and ``orjson.loads`` alone as the floor of any decoder."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson

from processor.core.config import CoreConfig
from processor.core.derive import derive
from processor.core.read import read_change
from processor.core.resolver import InMemoryResolver, ServiceInfo
from slotguard.bench.workload import SERVICE_MAP


def resolver() -> InMemoryResolver:
    return InMemoryResolver(ServiceInfo(str(s), str(c), str(e)) for s, (c, e) in SERVICE_MAP.items())


def core_rate(values: Sequence[bytes], config: CoreConfig, rounds: int = 3) -> float:
    """Changes per second through read_change + derive, best of ``rounds`` (one core)."""
    res = resolver()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for value in values:
            derive(read_change(value, config), config, res)
        best = min(best, time.perf_counter() - start)
    return len(values) / best


def orjson_rate(values: Sequence[bytes], rounds: int = 3) -> float:
    loads = orjson.loads
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for value in values:
            loads(value)
        best = min(best, time.perf_counter() - start)
    return len(values) / best
