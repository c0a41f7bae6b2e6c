"""The core's throughput per change -- :func:`process_change`: keys and the event JSON -- and
``orjson.loads`` alone as the floor of any decoder."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import orjson

from processor.core.config import CoreConfig
from processor.core.derive import process_change
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


def core_pass(config: CoreConfig) -> Callable[[bytes], object]:
    """What is measured per change: :func:`process_change` (keys and event JSON, what the worker does)."""
    res = resolver()

    def core(value: bytes) -> object:
        return process_change(value, config, res)

    return core


@dataclass(frozen=True)
class CoreRates:
    """Changes per second through the core, and ``orjson.loads`` alone over the same bytes."""

    core: float
    orjson_loads: float


def core_rates(values: Sequence[bytes], config: CoreConfig, rounds: int = 3) -> CoreRates:
    """:func:`process_change` and ``orjson.loads`` over ``values``, best of ``rounds`` each, measured in
    turn within every round: on a shared machine whose speed drifts by a quarter within minutes, a ratio
    of two figures taken minutes apart measured the drift as much as the code."""
    core = core_pass(config)
    timed: dict[Callable[[bytes], object], float] = {}
    for _ in range(rounds):
        for each in (orjson.loads, core):
            took = _seconds(values, each)
            timed[each] = min(took, timed.get(each, took))
    n = len(values)
    return CoreRates(n / timed[core], n / timed[orjson.loads])


def measure_quietly(n: int, timeout: float = 900.0) -> CoreRates:
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
    return CoreRates(**orjson.loads(done.stdout))


def _child(n: int) -> None:
    from slotguard.settings import load_settings
    from slotguard.wiring import core_config

    values = [c.value for c in changes(n)]
    config = core_config(load_settings())
    sys.stdout.buffer.write(orjson.dumps(asdict(core_rates(values, config))))


if __name__ == "__main__":
    _child(int(sys.argv[1]))
