"""Helpers for the end-to-end pipeline tests (no tests here): one relay + one worker on a private database,
and the Redis side of a booking -- seed slot-cache keys, run SQL, wait until exactly the expected keys vanish.

The worker's side (subprocess, settings → environment, polling) comes from ``worker_harness``; the relay
runs as the local stack's :class:`~slotguard.dev.relay_worker.RelayPart`, whose health probe is "the replication
slot is active" -- from then on every commit is captured.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from slotguard.dev.errors import ServerStartError
from slotguard.dev.kafka import run_sync
from slotguard.dev.paths import StackPaths
from slotguard.dev.postgres import create_database, drop_database
from slotguard.dev.relay_worker import RelayPart
from slotguard.settings import Settings, settings_to_env
from tests.integration.worker_harness import WorkerProcess, window_keys
from tests.support.servers import DevStackHandle, with_database
from tests.support.waiting import wait_until

#: Seconds a change may take from commit to its keys vanishing. Generous: the first change after a relay
#: start has been seen to take ~12 s on a busy 2-core machine; steady state is well under a second.
CHANGE_DEADLINE_S = 90.0
#: Poll interval while waiting for keys to vanish; small, because the wait doubles as a latency probe.
POLL_S = 0.002

#: The first day the tests book on; each test takes a day of its own (see :meth:`Pipeline.new_day`).
FIRST_DAY = datetime(2031, 3, 3, tzinfo=UTC)


def unique(hint: str) -> str:
    """A name for a slot / publication / topic prefix / group: lower-case letters, digits and ``_``."""
    return f"{hint}_{secrets.token_hex(4)}"


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


@dataclass
class Pipeline:
    """The running pipeline of one test module and the probes the tests use."""

    settings: Settings
    database_url: str
    relay: RelayPart
    worker: WorkerProcess
    redis: redis.Redis
    #: client-observed seconds from "COMMIT returned" to "every expected key gone", one per waited change
    latencies: list[float] = field(default_factory=list)
    _days: int = 0

    @property
    def prefix(self) -> str:
        return self.settings.redis_key_prefix

    # --- data ----------------------------------------------------------------------------------------
    def new_day(self) -> datetime:
        """A day no other test of the module books on, so windows never overlap between tests."""
        self._days += 1
        return FIRST_DAY + timedelta(days=7 * self._days)

    def window(self, company: Any, branch: Any, event_type: Any, starts: datetime) -> list[str]:
        """The seed's three physical keys around a one-hour appointment starting at ``starts``."""
        return window_keys(self.prefix, company, branch, event_type, starts)

    def neighbours(self, company: int, branch: int, event_type: int, starts: datetime) -> list[str]:
        """Keys beside a window that a change there must not touch: another company, branch and event type
        in the same hours, and the same tenant two hours before and after."""
        other_company = 20 if company != 20 else 15
        return (
            self.window(other_company, branch, event_type, starts)
            + self.window(company, branch + 100, event_type, starts)
            + self.window(company, branch, event_type + 1000, starts)
            + [self.window(company, branch, event_type, starts - timedelta(hours=2))[0]]
            + [self.window(company, branch, event_type, starts + timedelta(hours=2))[2]]
        )

    def seed(self, keys: Iterable[str]) -> None:
        """Cache something under each key, as the booking app's availability lookup would."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, '["slots"]')
            pipe.execute()

    def present(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        if not keys:
            return []
        flags = self.redis.pipeline(transaction=False)
        for key in keys:
            flags.exists(key)
        return [k for k, there in zip(keys, flags.execute(), strict=True) if there]

    # --- SQL -----------------------------------------------------------------------------------------
    def sql(self, statement: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run one statement in its own transaction (autocommit, as an ORM's save() does); returns the
        first row if the statement returned any. When this returns, the change is committed."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement.encode(), params)
            return cursor.fetchone() if cursor.description else None

    # --- waiting -------------------------------------------------------------------------------------
    def expect_gone(self, keys: Sequence[str], *, committed_at: float, what: str) -> float:
        """Wait until every key of ``keys`` is gone; record and return the seconds since ``committed_at``
        (a ``time.monotonic()`` taken when the COMMIT returned). Fails naming the keys still there."""
        deadline = committed_at + CHANGE_DEADLINE_S
        while True:
            left = self.present(keys)
            if not left:
                elapsed = time.monotonic() - committed_at
                self.latencies.append(elapsed)
                return elapsed
            self.worker.alive_or_fail()
            if self.relay.process.exit_status() is not None:
                pytest.fail(f"relay exited; log:\n{self.relay.process.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: after {CHANGE_DEADLINE_S:.0f}s these keys are still in Redis: {left}\n"
                    f"--- worker log ---\n{self.worker.log_tail()}\n"
                    f"--- relay log ---\n{self.relay.process.log_tail()}"
                )
            time.sleep(POLL_S)  # poll interval of a condition wait (Redis has no "key gone" event here)

    def change(
        self, statement: str, params: Sequence[Any] = (), *, gone: Sequence[str]
    ) -> tuple[Any, ...] | None:
        """Run ``statement`` and wait until exactly ``gone`` has vanished (callers assert the survivors)."""
        row = self.sql(statement, params)
        self.expect_gone(gone, committed_at=time.monotonic(), what=statement.split()[0])
        return row

    def wait_metric(self, name: str, value: float, timeout: float = 30.0) -> None:
        """Until the worker's metric ``name`` reads ``value``: the worker counts a batch's outcome after
        Redis acked its UNLINK, so the count may trail the keys' disappearance by a moment."""
        wait_until(
            lambda: self.worker.metric(name) == value,
            timeout=timeout,
            what=lambda: (
                f"{name} == {value} (it is {self.worker.metric(name)}); log:\n{self.worker.log_tail()}"
            ),
        )

    # --- latency report ------------------------------------------------------------------------------
    def latency_report(self) -> str:
        lines = []
        if self.latencies:
            ms = sorted(x * 1000 for x in self.latencies)
            p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
            lines.append(
                f"commit→keys gone, observed by polling Redis every {POLL_S * 1000:.0f} ms "
                f"(n={len(ms)}): median {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, "
                f"min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms"
            )
        histogram = latency_histogram(self.worker.metrics())
        if histogram is not None:
            lines.append(histogram)
        return "\n".join(lines)


def latency_histogram(samples: dict[str, float]) -> str | None:
    """The worker's ``slotguard_commit_to_delete_seconds`` (source.ts_ms → Redis ack) summarised: mean, and
    the median / p99 as the upper bound of the bucket holding them."""
    count = samples.get("slotguard_commit_to_delete_seconds_count", 0.0)
    if not count:
        return None
    total = samples.get("slotguard_commit_to_delete_seconds_sum", 0.0)
    buckets = sorted(
        (float(name.split('le="', 1)[1].rstrip('"}')), value)
        for name, value in samples.items()
        if name.startswith("slotguard_commit_to_delete_seconds_bucket")
    )

    def quantile(q: float) -> str:
        for upper, cumulative in buckets:
            if cumulative >= q * count:
                return f"≤ {upper * 1000:.0f} ms" if upper != float("inf") else "> largest bucket"
        return "?"

    return (
        f"worker histogram slotguard_commit_to_delete_seconds (source.ts_ms → UNLINK acked, n={count:.0f}): "
        f"mean {total / count * 1000:.0f} ms, median {quantile(0.5)}, p99 {quantile(0.99)}"
    )


def topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has (0: it does not exist)."""

    async def go() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()
            return len(consumer.partitions_for_topic(topic) or ())
        finally:
            await consumer.stop()

    return run_sync(go())


@dataclass
class PipelineDeployment:
    """Starts and stops what :class:`Pipeline` needs: a database from the template, relay, worker."""

    stack: DevStackHandle
    workdir: Path
    started: list[str] = field(default_factory=list)
    #: settings the test wants on top of the deployment's own
    overrides: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Pipeline:
        name = unique("e2e")
        database = f"{name}_db"
        create_database(self.stack.server_url, database, template=self.stack.template_database)
        self.database = database
        database_url = with_database(self.stack.database_url, database)
        settings = self.stack.settings(
            database_url=database_url,
            topic_prefix=name,
            slot_name=name,
            publication_name=f"{name}_pub",
            consumer_group=f"{name}_group",
            events_topic=f"{name}.events",
            dlq_topic=f"{name}.dlq",
            redis_key_prefix=f"{name}:",
            heartbeat_interval_ms=1000,
            log_level="INFO",
            **self.overrides,
        )
        paths = StackPaths.at(self.workdir)
        paths.ensure()
        relay = RelayPart(paths, settings_to_env(settings), database_url, name)
        self.relay = relay
        try:
            relay.start()
            relay.wait_ready()  # the slot is active: every commit from now on reaches Kafka
        except ServerStartError as exc:
            pytest.fail(f"relay did not start: {exc.detailed()}", pytrace=False)
        worker = WorkerProcess(settings, self.workdir / "worker.log")
        self.worker = worker
        worker.wait_assigned(timeout=120)
        wait_healthy(worker)
        client = redis.Redis.from_url(self.stack.redis_url, decode_responses=True)
        return Pipeline(settings, database_url, relay, worker, client)

    def stop(self, pipeline: Pipeline | None) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop()
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.stop()
        if pipeline is not None:
            keys = list(pipeline.redis.scan_iter(match=f"{pipeline.prefix}*", count=500))
            if keys:
                pipeline.redis.unlink(*keys)
            pipeline.redis.close()
        if getattr(self, "database", None):
            drop_database(self.stack.server_url, self.database)  # drops the replication slot too


def wait_healthy(worker: WorkerProcess, timeout: float = 60.0) -> None:
    """Until /healthz answers 200 (consumer running, Redis reachable)."""

    def answers_200() -> bool:
        health = worker.healthz()
        return worker.alive_or_fail() and health is not None and health[0] == 200

    wait_until(
        answers_200,
        timeout=timeout,
        what=lambda: f"worker /healthz 200 (now: {worker.healthz()}); log:\n{worker.log_tail()}",
    )
