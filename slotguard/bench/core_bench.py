"""The core's throughput per change -- keys only (events made lazily, as the worker makes them when it
publishes), with the event JSON made too, and the reference path alone -- and ``orjson.loads`` alone as the
floor of any decoder."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import orjson

from processor.core.config import CoreConfig
from processor.core.derive import process_change, reference_outcome
from processor.core.resolver import InMemoryResolver, ServiceInfo
from slotguard.bench.errors import BenchError
from slotguard.bench.workload import SERVICE_MAP, changes


def resolver() -> InMemoryResolver:
    return InMemoryResolver(ServiceInfo(str(s), str(c), str(e)) for s, (c, e) in SERVICE_MAP.items())


def _seconds(values: Sequence[bytes], each: Callable[[bytes], object]) -> float:
    start = time.perf_counter()
    for value in values:
        each(value)
    return time.perf_counter() - start


def _best_rate(values: Sequence[bytes], each: Callable[[bytes], object], rounds: int) -> float:
    """Values per second through ``each``, best of ``rounds`` (one core)."""
    return len(values) / min(_seconds(values, each) for _ in range(rounds))


def core_passes(config: CoreConfig) -> tuple[Callable[[bytes], object], Callable[[bytes], object]]:
    """What is measured per change: :func:`process_change` (keys, events made lazily), and the same with
    every event's JSON made (what the worker publishes)."""
    res = resolver()

    def keys(value: bytes) -> object:
        return process_change(value, config, res)

    def with_events(value: bytes) -> object:
        return [record.value for record in process_change(value, config, res).records]

    return keys, with_events


@dataclass(frozen=True)
class CoreRates:
    """Changes per second: keys with events made lazily, with every event's JSON made, and
    ``orjson.loads`` alone over the same bytes."""

    keys: float
    with_event_json: float
    orjson_loads: float


def core_rates(values: Sequence[bytes], config: CoreConfig, rounds: int = 3) -> CoreRates:
    """:func:`process_change` (keys; keys and event JSON) and ``orjson.loads`` over ``values``, best of
    ``rounds`` each, measured in turn within every round: on a shared machine whose speed drifts by a
    quarter within minutes, a ratio of two figures taken minutes apart measured the drift as much as
    the code."""
    keys, with_events = core_passes(config)
    timed: dict[Callable[[bytes], object], float] = {}
    for _ in range(rounds):
        for each in (orjson.loads, keys, with_events):
            took = _seconds(values, each)
            timed[each] = min(took, timed.get(each, took))
    n = len(values)
    return CoreRates(n / timed[keys], n / timed[with_events], n / timed[orjson.loads])


def reference_rate(values: Sequence[bytes], config: CoreConfig, rounds: int = 1) -> float:
    """Changes per second through the reference path alone (events included)."""
    res = resolver()
    return _best_rate(values, lambda v: reference_outcome(v, config, res), rounds)


@dataclass(frozen=True)
class CorePart:
    """The core part's figures: the rates of :func:`core_rates` and the reference path's."""

    rates: CoreRates
    reference: float


def measure_quietly(n: int, timeout: float = 900.0) -> CorePart:
    """The core part over the bench's first ``n`` changes, in a process of its own with the environment's
    settings: the bench's process runs a progress display (rich's refresh thread takes the GIL about twelve
    times a second) and holds the whole workload, which moved the core's ratio to ``orjson.loads`` by about
    0.1 (1.84-1.87x in a plain process, 1.93-1.98x beside a spinner: two runs each, one machine)."""
    done = subprocess.run(
        [sys.executable, "-m", "slotguard.bench.core_bench", str(n)],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the core part exited with {done.returncode}: {last}")
    figures = orjson.loads(done.stdout)
    return CorePart(CoreRates(**figures["rates"]), figures["reference"])


def _child(n: int) -> None:
    from slotguard.settings import load_settings
    from slotguard.wiring import core_config

    values = [c.value for c in changes(n)]
    config = core_config(load_settings())
    part = CorePart(core_rates(values, config), reference_rate(values, config))
    sys.stdout.buffer.write(orjson.dumps(asdict(part)))


if __name__ == "__main__":
    _child(int(sys.argv[1]))
