"""Where the machine's cores went while a part of the bench ran.

The e2e latencies are measured on the machine that also runs Postgres, the broker, Redis, the relay, the
worker and the load generator: when the two cores are full, every hop waits for a core and the tail says
more about the machine than about slotguard. So each e2e rate reports, for the seconds the load ran, the
machine's busy and stolen cores (a virtual machine's host running something else: time this machine
wanted a core and did not get one) and each process' share -- a stack part counted with its children
(Postgres' backends), the bench's own process (load generator and observer) apart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

import psutil

from slotguard.dev.procs import live_processes

#: The bench's own process in :meth:`CpuMeter.stop`'s figures.
BENCH = "bench"


def _tree_seconds(process: psutil.Process, *, children: bool = True) -> dict[int, float]:
    """CPU seconds (user + system) of ``process`` and (unless not ``children``) every descendant, by pid."""
    seconds: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        for proc in (process, *(process.children(recursive=True) if children else ())):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
    return seconds


class CpuMeter:
    """:meth:`start`, run the load, :meth:`stop`: cores used meanwhile (busy, stolen, per process)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._processes = live_processes(pids)
        # Itself only: the bench started the stack, whose parts are its descendants and counted above.
        self._processes[BENCH] = psutil.Process(os.getpid())
        self._started: tuple[float, Any, dict[str, dict[int, float]]] | None = None

    def start(self) -> None:
        trees = {name: _tree_seconds(proc, children=name != BENCH) for name, proc in self._processes.items()}
        self._started = (time.monotonic(), psutil.cpu_times(), trees)

    def stop(self) -> dict[str, float]:
        """Cores (CPU seconds per second) since :meth:`start`: ``machine_busy`` (every state but idle,
        I/O wait and steal), ``steal``, and one entry per process. A process that started meanwhile counts
        whole; one that ended meanwhile is missing."""
        if self._started is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        began, machine, trees = self._started
        elapsed = max(time.monotonic() - began, 1e-9)
        now = psutil.cpu_times()
        spent = {field: getattr(now, field) - getattr(machine, field) for field in now._fields}
        # Linux counts guest time in user time too: left out of the total, not counted twice.
        total = sum(v for k, v in spent.items() if k not in ("guest", "guest_nice")) or 1e-9
        cores = psutil.cpu_count() or 1
        steal = spent.get("steal", 0.0)
        busy = total - spent.get("idle", 0.0) - spent.get("iowait", 0.0) - steal
        figures = {"machine_busy": round(cores * busy / total, 2), "steal": round(cores * steal / total, 2)}
        for name, proc in self._processes.items():
            before = trees.get(name, {})
            after = _tree_seconds(proc, children=name != BENCH)
            used = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
            figures[name] = round(max(0.0, used) / elapsed, 2)
        return figures
