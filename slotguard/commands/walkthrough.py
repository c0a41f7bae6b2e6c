"""``slotguard demo --walkthrough``: the product on the local stack, step by step, with the cache keys you can
watch vanish.

Brings the local stack up (``slotguard dev up``, relay and worker included; reused when it already runs),
caches slots for company 15 / branch 1 / event type 123 around 14:00 tomorrow with company 20's slots beside
them, then plays a phone booking, a reschedule and a cancellation as the SQL a booking source issues. After
each it waits until the booking's keys are gone from Redis, shows which keys vanished and which survived,
and how long it took from the commit. The keys are computed by the same core the worker runs, so the demo
follows ``SLOTGUARD_KEY_TEMPLATE``, ``SLOTGUARD_KEY_TIMEZONE`` and ``SLOTGUARD_REDIS_KEY_PREFIX``.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.errors import DependencyError
from schemas.redact import redact_url
from slotguard.settings import Settings

if TYPE_CHECKING:
    from slotguard.dev.stack import DevStack, StackInfo

#: Seconds one change may take from commit to its keys vanishing before the demo gives up. The first
#: change after a fresh relay start can take several seconds; steady state is well under one.
CHANGE_DEADLINE_S = 90.0
POLL_S = 0.005  # the wait doubles as the latency probe, so poll finely

BOOKED_COMPANY, BOOKED_BRANCH, BOOKED_SERVICE = 15, 1, 1  # demo service 1: company 15's "Haircut" → 123
NEIGHBOUR_COMPANY, NEIGHBOUR_BRANCH = 20, 2  # the seed's "Company B", same event type and hours

CACHED_VALUE = '["{start}","{start}+15m","{start}+30m","{start}+45m"]'
CACHE_TTL_S = 3600  # like the booking app's cache; leftovers of a demo expire on their own


class DemoError(DependencyError):
    """The demo could not run: the local stack did not start, or a change never reached Redis."""


# --- keys ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One appointment's place: whose cache (company, branch, event type) and when."""

    company: int
    branch: int
    event_type: int
    starts: datetime
    ends: datetime


def redis_keys(settings: Settings, slot: Slot) -> list[str]:
    """The physical Redis keys a booking of ``slot`` invalidates, computed by the worker's own core."""
    import orjson

    from processor.core.derive import process_change
    from processor.core.resolver import InMemoryResolver, ServiceInfo
    from slotguard.wiring import core_config

    service = "1"
    resolver = InMemoryResolver([ServiceInfo(service, str(slot.company), str(slot.event_type))])
    row = {
        "id": 0,
        "company_id": slot.company,
        "branch_id": slot.branch,
        "service_id": int(service),
        "starts_at": slot.starts.isoformat(),
        "ends_at": slot.ends.isoformat(),
        "status": "booked",
    }
    change = {"op": "c", "before": None, "after": row, "source": {"lsn": 1, "txId": 1, "ts_ms": 0}}
    outcome = process_change(orjson.dumps(change), core_config(settings), resolver)
    return list(outcome.redis_keys)


# --- the worker's own latency measurement ----------------------------------------------------------------


def worker_latency(metrics_url: str) -> tuple[float, float] | None:
    """(sum, count) of the worker's commit→delete histogram, or None when /metrics does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "slotguard_commit_to_delete_seconds_sum":
                total = sample.value
            elif sample.name == "slotguard_commit_to_delete_seconds_count":
                count = sample.value
    return total, count


# --- the scenario ----------------------------------------------------------------------------------------


class Demo:
    def __init__(
        self,
        console: Console,
        settings: Settings,
        database_url: str,
        redis_url: str,
        web_port: int,
        logs: Path,
    ) -> None:
        import psycopg
        import redis

        self.console = console
        self.settings = settings
        self.logs = logs
        self.metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        try:
            self.db = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DemoError(f"cannot connect to {redact_url(database_url)}: {exc}".splitlines()[0]) from None
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        self.seeded: set[str] = set()
        self.failed = False

    def close(self) -> None:
        self.db.close()
        self.redis.close()

    def event_type_of(self, service: int) -> int:
        row = self.db.execute(
            "SELECT calcom_event_type_id FROM services WHERE id = %s", (service,)
        ).fetchone()
        if row is None or row[0] is None:
            raise DemoError(f"the demo service {service} is missing from the stack's database")
        return int(row[0])

    def seed(self, keys: Sequence[str]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, CACHED_VALUE.format(start=key.rsplit("_", 2)[-2]), ex=CACHE_TTL_S)
            pipe.execute()
        self.seeded.update(keys)

    def present(self, keys: Sequence[str]) -> list[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            flags = pipe.execute()
        return [k for k, there in zip(keys, flags, strict=True) if there]

    def step(
        self,
        title: str,
        statement: str,
        params: Sequence[Any],
        *,
        doomed: Sequence[str],
        beside: Sequence[str],
    ) -> Any:
        """Seed ``doomed`` and ``beside``, run ``statement``, wait until ``doomed`` is gone; show the result."""
        import psycopg
        import redis

        self.console.rule(f"[bold]{title}")
        self.seed([*doomed, *beside])
        self.console.print(
            f"[dim]cached {len(doomed) + len(beside)} slot keys; now the booking source runs:[/]"
        )
        shown = psycopg.ClientCursor(self.db).mogrify(statement, params)  # the SQL with its values in
        self.console.print(Text("  " + " ".join(shown.split()), style="cyan"))
        before = worker_latency(self.metrics_url)
        try:
            cursor = self.db.execute(statement, params)  # autocommit: committed when this returns
            committed = time.monotonic()
            row = cursor.fetchone() if cursor.description else None
            left = self.wait_gone(doomed, committed)
            survived = self.present(beside)
        except psycopg.Error as exc:
            raise DemoError(f"Postgres: {exc}".splitlines()[0]) from None
        except redis.RedisError as exc:
            raise DemoError(f"Redis: {exc}") from None
        took = time.monotonic() - committed
        if left:
            raise DemoError(
                f"{len(left)} keys still in Redis {CHANGE_DEADLINE_S:.0f} s after the commit; "
                f"see {self.logs / 'worker.log'} and {self.logs / 'relay.log'}"
            )
        after = worker_latency(self.metrics_url)
        self.show(doomed, beside, survived)
        line = f"commit → keys gone: [bold]{took * 1000:.0f} ms[/] (seen from here, polling Redis)"
        if before is not None and after is not None and after[1] > before[1]:
            worker_ms = (after[0] - before[0]) / (after[1] - before[1]) * 1000
            line += f"; the worker measured [bold]{worker_ms:.0f} ms[/] from the commit to Redis' UNLINK ack"
        self.console.print(line)
        if len(survived) != len(beside):
            self.failed = True
            lost = sorted(set(beside) - set(survived))
            self.console.print(f"[bold red]✗ keys of other tenants or hours were deleted: {lost}[/]")
        return row

    def wait_gone(self, keys: Sequence[str], committed: float) -> list[str]:
        """Poll until ``keys`` are gone or the deadline passes; returns those still there."""
        with self.console.status("waiting for relay → Kafka → worker → Redis…"):
            while True:
                left = self.present(keys)
                if not left or time.monotonic() > committed + CHANGE_DEADLINE_S:
                    return left
                time.sleep(POLL_S)  # poll interval of a condition wait

    def show(self, doomed: Sequence[str], beside: Sequence[str], survived: Sequence[str]) -> None:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("Redis key")
        table.add_column("after the change")
        for key in doomed:
            table.add_row(key, "[red]✗ deleted[/]")
        for key in beside:
            table.add_row(
                f"[dim]{key}[/]", "[green]✓ kept[/]" if key in survived else "[bold red]✗ deleted![/]"
            )
        self.console.print(table)

    def cleanup(self) -> None:
        """Remove the keys the demo cached that are still there (the other tenant's)."""
        if self.seeded:
            self.redis.unlink(*self.seeded)


def run_scenario(demo: Demo, settings: Settings) -> None:
    zone = ZoneInfo(settings.key_timezone)
    tomorrow = datetime.now(zone).date() + timedelta(days=1)
    two, five = (datetime.combine(tomorrow, clock(h), tzinfo=zone) for h in (14, 17))
    event_type = demo.event_type_of(BOOKED_SERVICE)

    def keys(company: int, branch: int, starts: datetime) -> list[str]:
        return redis_keys(settings, Slot(company, branch, event_type, starts, starts + timedelta(hours=1)))

    at_two, at_five = keys(BOOKED_COMPANY, BOOKED_BRANCH, two), keys(BOOKED_COMPANY, BOOKED_BRANCH, five)
    others = keys(NEIGHBOUR_COMPANY, NEIGHBOUR_BRANCH, two) + keys(NEIGHBOUR_COMPANY, NEIGHBOUR_BRANCH, five)

    row = demo.step(
        f"1 · phone booking {two:%Y-%m-%d} 14:00 (company {BOOKED_COMPANY}, branch {BOOKED_BRANCH})",
        "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source) "
        "VALUES (%s, %s, %s, %s, %s, 'booked', 'phone') RETURNING id",
        (BOOKED_COMPANY, BOOKED_BRANCH, BOOKED_SERVICE, two, two + timedelta(hours=1)),
        doomed=at_two,
        beside=others,
    )
    appointment = int(row[0])
    demo.step(
        "2 · rescheduled 14:00 → 17:00: old and new window",
        "UPDATE appointments SET starts_at = %s, ends_at = %s, updated_at = now() WHERE id = %s",
        (five, five + timedelta(hours=1), appointment),
        doomed=at_two + at_five,
        beside=others,
    )
    demo.step(
        "3 · cancelled: the 17:00 window is free again",
        "UPDATE appointments SET status = 'cancelled', updated_at = now() WHERE id = %s",
        (appointment,),
        doomed=at_five,
        beside=others,
    )


# --- the command -----------------------------------------------------------------------------------------


def start_stack(console: Console, stack: DevStack) -> StackInfo:
    """``dev up`` with the relay and worker (parts already running are reused)."""
    from slotguard.dev.errors import DevStackError

    current = {"part": "postgres"}
    began = time.monotonic()
    with console.status("starting the local stack…") as spinner:

        def on_event(part: str, event: str) -> None:
            current["part"] = part
            if event in ("starting", "waiting"):
                spinner.update(f"{event} {part}…")
            elif event == "ready":
                console.print(f"[green]✓[/] {part} ready")
            elif event == "running":
                console.print(f"[cyan]•[/] {part} already running")

        try:
            result = stack.up(on_event=on_event)
        except DevStackError as exc:
            log = stack.paths.log(current["part"])
            raise DemoError(f"the local stack did not start: {exc}; log: {log}") from None
    if result.started:
        console.print(f"[dim]started {', '.join(result.started)} in {time.monotonic() - began:.1f} s[/]")
    return result.info


def walk(console: Console, settings: Settings, stack: DevStack, info: StackInfo, dir_option: str) -> int:
    """The three steps on a running stack; 1 when keys of other tenants or hours were deleted."""
    demo = Demo(console, settings, info.database_url, info.redis_url, info.web_port, stack.paths.logs)
    try:
        run_scenario(demo, settings)
        demo.cleanup()
    finally:
        demo.close()
    console.rule("[bold]inspect")
    console.print(f"  stack:    slotguard dev status{dir_option}")
    console.print(f"  metrics:  curl http://127.0.0.1:{info.web_port}/metrics", highlight=False)
    console.print(f"  logs:     {stack.paths.logs}/")
    console.print(f"  env:      set -a; . {stack.paths.env_file}; set +a")
    return 1 if demo.failed else 0
