"""Draining a pre-filled topic: the worker (or the naive agent) against the same records, start-up excluded.

A fresh consumer group per run; the clock starts when the group first commits and stops when the committed
offsets reach the end of every partition, so neither start-up nor the group join counts. Committed offsets
are sampled every 0.2 s (the throughput-over-time plot) and the process's RSS with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from slotguard.bench.errors import BenchError
from slotguard.bench.workload import Change, services_changes
from slotguard.operate.kafka_group import committed_and_end_offsets
from slotguard.settings import Settings, child_environment

SAMPLE_S = 0.2


@dataclass
class DrainResult:
    records: int
    seconds: float
    rate: float
    rss_mb_peak: float
    #: (seconds since the clock started, records committed)
    progress: list[tuple[float, int]] = field(default_factory=list)
    #: RSS when the clock started (the first commit) and when the last record was committed.
    rss_mb_start: float = 0.0
    rss_mb_end: float = 0.0


async def prefill(
    bootstrap: str, topic: str, services_topic: str, records: Iterable[Change], partitions: int
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1), NewTopic(services_topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1)
    await producer.start()
    try:
        for key, value in services_changes():
            await producer.send(services_topic, value, key=key)
        pending = []
        for change in records:
            pending.append(await producer.send(topic, change.value, key=change.key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def drain(
    command: Sequence[str],
    settings: Settings,
    total: int,
    log: Path,
    timeout: float = 1800.0,
    *,
    processes: int = 1,
) -> DrainResult:
    """Run ``command`` (a consumer of ``settings.appointments_topic`` in ``settings.consumer_group``) until
    the group committed ``total`` records; stop it; the rate with start-up excluded.

    ``processes`` > 1 starts that many copies in the same group (the partitions split between them; each
    its own web port and log, ``log`` with ``.<n>`` before its suffix): the scale-out a second core allows.
    RSS is then the largest of them."""
    from slotguard.dev.parts import free_port

    options = {"bootstrap_servers": settings.kafka_bootstrap}
    procs: list[subprocess.Popen[bytes]] = []
    for n in range(processes):
        own = settings if n == 0 else settings.model_copy(update={"web_port": free_port()})
        with _log_of(log, n).open("ab") as out:
            procs.append(
                subprocess.Popen(
                    command, env=child_environment(own, os.environ), stdout=out, stderr=subprocess.STDOUT
                )
            )
    watched = [psutil.Process(p.pid) for p in procs]
    peak = rss = first_rss = 0.0
    progress: list[tuple[float, int]] = []
    start: float | None = None
    last_idle: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            for n, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise BenchError(
                        f"{command[-1]} exited with {proc.returncode} during the drain; see {_log_of(log, n)}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(f"drain did not finish in {timeout:.0f}s; see {log}")
            committed, _ = asyncio.run(
                committed_and_end_offsets(options, settings.consumer_group, settings.appointments_topic)
            )
            done = sum(o or 0 for o in committed.values())
            now = time.monotonic()
            with contextlib.suppress(psutil.Error):
                rss = max(w.memory_info().rss for w in watched) / 2**20
                peak = max(peak, rss)
            if not done:
                last_idle = now  # nothing committed yet: start-up, group join
            elif start is None:
                # The clock starts at the last sample without a commit: at most one sample of start-up counts.
                start = last_idle if last_idle is not None else now
                first_rss = rss
                progress.append((0.0, 0))
            if start is not None:
                progress.append((now - start, done))
                if done >= total:
                    seconds = max(now - start, SAMPLE_S)
                    return DrainResult(total, seconds, total / seconds, peak, progress, first_rss, rss)
            time.sleep(SAMPLE_S)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _log_of(log: Path, n: int) -> Path:
    """The log of the ``n``-th process of a drain: ``log`` for the first, ``name.<n>.log`` after it."""
    return log if n == 0 else log.with_suffix(f".{n}{log.suffix}")


def worker_command() -> list[str]:
    return [sys.executable, "-P", "-m", "slotguard.cli", "worker"]


def naive_command() -> list[str]:
    return [sys.executable, "-P", "-m", "slotguard.bench.naive_agent"]
