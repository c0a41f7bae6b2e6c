"""Runs the simulation mode after mode on the local stack and gathers every figure.

Each mode gets fresh tenants (companies no earlier run or mode used), so no cached answer, booking or
backlog of one mode touches another's. Between modes the worker is restarted with the mode's settings
(or stopped, for ``ttl-only``), and the run waits until the worker has caught up with the topic, so its
commit→delete histogram holds this mode's changes and nothing else.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from schemas.errors import DependencyError
from slotguard.bench.run import commit, machine
from slotguard.dev.procs import RssPeaks
from slotguard.dev.stack import DevStack, StackInfo
from slotguard.operate.kafka_group import committed_and_end_offsets, quiet_kafka_client
from slotguard.settings import Settings
from slotguard.sim.business import Workload, first_day, seed_business
from slotguard.sim.engine import EventsFeed, Simulation, Tally
from slotguard.sim.modes import Mode, mode
from slotguard.sim.report import histogram_quantile
from slotguard.wiring import core_config, kafka_connection

#: Longest the worker may take to catch up with the topic between modes.
CATCH_UP_DEADLINE_S = 180.0


class SimulationError(DependencyError):
    """The simulation could not run: the stack or the worker did not do its part."""


def scrape(metrics_url: str) -> dict[str, Any] | None:
    """The worker's latency histogram (cumulative buckets) and dead-letter count, or None if it is off."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    buckets: list[tuple[float, float]] = []
    dlq = changes = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "slotguard_commit_to_delete_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "slotguard_dlq_total":
                dlq += sample.value
            elif sample.name == "slotguard_changes_total":
                changes += sample.value
    return {"buckets": sorted(buckets), "dlq": dlq, "changes": changes}


def worker_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Commit→delete p50/p99 (ms) and dead letters between two scrapes of the same worker."""
    if before is None or after is None:
        return {
            "commit_to_delete_p50_ms": None,
            "commit_to_delete_p99_ms": None,
            "dlq": None,
            "changes": None,
        }
    old = dict(before["buckets"])
    buckets = [(bound, count - old.get(bound, 0.0)) for bound, count in after["buckets"]]

    def ms(q: float) -> float | None:
        seconds = histogram_quantile(q, buckets)
        return None if seconds is None else round(seconds * 1000, 1)

    return {
        "commit_to_delete_p50_ms": ms(0.50),
        "commit_to_delete_p99_ms": ms(0.99),
        "dlq": int(after["dlq"] - before["dlq"]),
        "changes": int(after["changes"] - before["changes"]),
    }


def wait_caught_up(settings: Settings, deadline_s: float = CATCH_UP_DEADLINE_S) -> None:
    """Until the worker's group has committed up to the end of every appointments partition."""
    options = kafka_connection(settings).aiokafka_options()
    deadline = time.monotonic() + deadline_s
    behind: dict[int, int] = {}
    while time.monotonic() < deadline:
        with quiet_kafka_client():
            committed, ends = asyncio.run(
                committed_and_end_offsets(options, settings.consumer_group, settings.appointments_topic)
            )
        behind = {
            p: end - (committed.get(p) or 0) for p, end in ends.items() if end > (committed.get(p) or 0)
        }
        if not behind:
            return
        time.sleep(0.2)  # poll interval of a condition wait
    raise SimulationError(
        f"the worker did not catch up within {deadline_s:.0f} s; changes behind per partition: {behind}"
    )


ModeEvent = Callable[[str, str], None]
LiveSink = Callable[[str, Tally, float], None]


def run_mode(
    stack: DevStack,
    info: StackInfo,
    settings: Settings,
    workload: Workload,
    current: Mode,
    company_base: int,
    *,
    on_event: ModeEvent,
    on_second: LiveSink,
) -> dict[str, Any]:
    """One mode: worker as the mode wants it, fresh tenants, the run, the verdicts."""
    if current.worker:
        on_event(current.name, "restarting the worker with the mode's settings")
        # The worker renders the keys the readers cache: the same template, whatever the stack's default.
        stack.restart_worker({**current.env, "SLOTGUARD_KEY_TEMPLATE": settings.key_template})
        wait_caught_up(settings)  # backlog of a mode that ran without the worker
    else:
        on_event(current.name, "stopping the worker")
        stack.stop_worker()
    core = core_config(settings)
    with psycopg.connect(info.database_url, autocommit=True, connect_timeout=10) as conn:
        business = seed_business(
            conn,
            workload,
            core,
            company_base=company_base,
            start=first_day(datetime.now(core.window.zone).date()),
        )
    metrics_url = f"http://127.0.0.1:{info.web_port}/metrics"
    before = scrape(metrics_url) if current.worker else None
    sim = Simulation(
        business,
        workload,
        database_url=info.database_url,
        redis_url=info.redis_url,
        leased=current.leased,
        events=EventsFeed(kafka_connection(settings).aiokafka_options(), settings.events_topic)
        if current.worker
        else None,
    )
    on_event(current.name, f"running {workload.seconds:g} s: {current.summary}")
    peaks = RssPeaks(stack.pids())

    def tick(tally: Tally, elapsed: float) -> None:
        peaks.sample()
        on_second(current.name, tally, elapsed)

    checker = asyncio.run(sim.run(on_second=tick))
    if current.worker:
        wait_caught_up(settings)
    after = scrape(metrics_url) if current.worker else None
    figures: dict[str, Any] = checker.figures().as_dict()
    figures.update(
        conflicts=sim.tally.conflicts,
        writes=sim.tally.bookings + sim.tally.moves + sim.tally.frees,
        writes_by_source=dict(sim.tally.by_source),
        companies=f"{company_base}..{company_base + workload.companies - 1}",
        mode_summary=current.summary,
        rss_mb=peaks.peaks,
        worker_settings=dict(current.env) if current.worker else None,
        **worker_delta(before, after),
    )
    return figures


def simulate(
    stack: DevStack,
    info: StackInfo,
    settings: Settings,
    workload: Workload,
    names: Sequence[str],
    *,
    on_event: ModeEvent,
    on_second: LiveSink,
    restore_worker: bool = True,
) -> dict[str, Any]:
    """Every mode in ``names``, back to back; the ``--json`` document."""
    # Fresh tenants per run and mode: ids no earlier run used (ten per mode, a hundred per run).
    run_base = 10_000_000 + (int(time.time()) % 1_000_000) * 100
    results: dict[str, Any] = {}
    try:
        for index, name in enumerate(names):
            results[name] = run_mode(
                stack,
                info,
                settings,
                workload,
                mode(name, settings),
                run_base + index * 10,
                on_event=on_event,
                on_second=on_second,
            )
    finally:
        if restore_worker:
            on_event("stack", "restarting the worker with the configured settings")
            stack.restart_worker({})
    return {
        "modes": results,
        "workload": workload.as_dict(),
        "machine": machine(),
        "commit": commit(),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
