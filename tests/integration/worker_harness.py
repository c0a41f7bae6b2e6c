"""Helpers for the worker's integration tests (no tests here): a worker subprocess, Kafka produce/consume,
committed offsets, a private redis-server, Debezium-shaped change builders, polling with deadlines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from slotguard.dev.kafka import create_topic, run_sync
from slotguard.dev.parts import free_port
from slotguard.operate.kafka_group import committed_and_end_offsets
from slotguard.settings import Settings, child_environment
from tests.support.changes import encode, envelope
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


# --- the worker process ----------------------------------------------------------------------------------


class WorkerProcess:
    """``python -m slotguard.cli worker`` with the given settings; output goes to ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path, command: Sequence[str] = ()) -> None:
        """``command``: the Python arguments instead of ``-P -m slotguard.cli worker`` (a test's wrapper)."""
        self.settings = settings
        self.log_path = log_path
        env = child_environment(settings, os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *(command or ("-P", "-m", "slotguard.cli", "worker"))],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _get(self, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except (urllib.error.URLError, OSError):
            return None

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{label="v",...}`` -> value (empty when not reachable)."""
        got = self._get("/metrics")
        if got is None or got[0] != 200:
            return {}
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(got[1].decode()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        key = name
        if labels:
            key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        return self.metrics().get(key, 0.0)

    def healthz(self) -> tuple[int, dict[str, Any]] | None:
        got = self._get("/healthz")
        if got is None:
            return None
        return got[0], orjson.loads(got[1])

    def wait_assigned(self, timeout: float = 90.0) -> None:
        """Until the worker owns at least one partition of the appointments topic."""
        wait_until(
            lambda: self.alive_or_fail() and self.metric("slotguard_assigned_partitions") >= 1,
            timeout=timeout,
            what=lambda: f"worker {self.proc.pid} to get a partition; log:\n{self.log_tail()}",
        )

    def alive_or_fail(self) -> bool:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"worker exited with {code}; log:\n{self.log_tail()}")
        return True

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()
        return int(self.proc.returncode)


# --- Kafka -----------------------------------------------------------------------------------------------

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, int | None]],
    *,
    max_request_size: int = 1048576,
) -> None:
    """Send ``(key, value, partition)`` records in order and wait until the broker acked each."""

    async def go() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=False, max_request_size=max_request_size
        )
        await producer.start()
        try:
            sent = [
                await producer.send(topic, value, key=key, partition=partition)
                for key, value, partition in records
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    run_sync(go())


def read_topic(bootstrap: str, topic: str, *, at_least: int, timeout: float = 60.0) -> list[Record]:
    """Every record of ``topic`` (all partitions, from the start), once there are ``at_least`` of them."""

    async def go() -> list[Record]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[Record] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and topic not in await consumer.topics():
                await consumer.getmany(timeout_ms=200)  # metadata refresh tick, not a sleep
            partitions = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            while len(got) < at_least and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, messages in batch.items():
                    got.extend(
                        Record(tp.partition, m.offset, m.key, m.value, [(k, bytes(v)) for k, v in m.headers])
                        for m in messages
                    )
        finally:
            await consumer.stop()
        return got

    got = run_sync(go())
    assert len(got) >= at_least, f"{topic}: expected at least {at_least} records, got {len(got)}: {got}"
    return got


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets for ``topic`` (partition -> next offset); missing = never committed.
    Read the way ``slotguard replay`` and ``doctor`` read them (a group-id consumer that never joins)."""
    committed, _ends = run_sync(committed_and_end_offsets({"bootstrap_servers": bootstrap}, group, topic))
    return {p: o for p, o in committed.items() if o is not None and o >= 0}


def make_topics(bootstrap: str, names_and_partitions: Mapping[str, int]) -> None:
    for name, partitions in names_and_partitions.items():
        create_topic(bootstrap, name, partitions)


# --- servers ---------------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of one test, persisting to ``data_dir`` (AOF) so keys survive a stop/start."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: Iterable[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._answers, timeout=20, what=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


# --- Debezium-shaped changes -----------------------------------------------------------------------------

BASE = datetime(2025, 10, 15, 14, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(
    appointment_id: int,
    *,
    starts: datetime,
    company: Any = 15,
    branch: Any = 1,
    service: Any = 7,
    status: str = "scheduled",
    notes: str = "",
    minutes: int = 60,
) -> dict[str, Any]:
    return {
        "id": appointment_id,
        "company_id": company,
        "branch_id": branch,
        "service_id": service,
        "customer_id": 99,
        "starts_at": iso(starts),
        "ends_at": iso(starts + timedelta(minutes=minutes)),
        "status": status,
        "notes": notes,
        "deleted_at": None,
    }


_lsn = iter(range(10_000_000, 100_000_000, 8))


def change(
    op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, *, table: str = "appointments"
) -> bytes:
    """A Debezium change event committed "now", with a fresh LSN (the suite's one builder underneath)."""
    return encode(
        envelope(op, before, after, table=table, lsn=next(_lsn), tx_id=1000, ts_ms=int(time.time() * 1000))
    )


def service_change(service_id: int, company: int, event_type: int | None, branch: int | None = 1) -> bytes:
    after = {"id": service_id, "company_id": company, "branch_id": branch, "name": f"s{service_id}",
             "calcom_event_type_id": event_type, "duration_minutes": 60}  # fmt: skip
    return change("r", None, after, table="services")


def window_keys(prefix: str, company: Any, branch: Any, event_type: Any, starts: datetime) -> list[str]:
    """The seed's three keys around ``starts`` (hour before, the hour, hour after), with the Redis prefix."""
    hour = starts.replace(minute=0, second=0, microsecond=0)
    out = []
    for delta in (-1, 0, 1):
        a = hour + timedelta(hours=delta)
        b = a + timedelta(hours=1)
        out.append(f"{prefix}cal_slots_{company}_{branch}_{event_type}_{a:%Y-%m-%d-%H}_{b:%Y-%m-%d-%H}")
    return out


@dataclass
class Topics:
    """The unique names of one worker deployment under test."""

    prefix: str
    group: str
    events: str
    dlq: str

    @property
    def appointments(self) -> str:
        return f"{self.prefix}.public.appointments"

    @property
    def services(self) -> str:
        return f"{self.prefix}.public.services"


def new_topics(unique_name: Callable[[str], str]) -> Topics:
    base = unique_name("w")
    return Topics(prefix=base, group=f"{base}_g", events=f"{base}.events", dlq=f"{base}.dlq")


def worker_settings(stack: Any, topics: Topics, key_prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "topic_prefix": topics.prefix,
        "consumer_group": topics.group,
        "events_topic": topics.events,
        "dlq_topic": topics.dlq,
        "redis_key_prefix": key_prefix,
        "database_url": None,
        "log_level": "INFO",
        "batch_timeout": 0.05,
        # No relay in these tests, so no Debezium heartbeats: the source watch stays off.
        "heartbeat_interval_ms": 0,
    }
    values.update(overrides)
    settings: Settings = stack.settings(**values)
    return settings


def still_there(client: Any, keys: Iterable[str]) -> list[str]:
    """The keys of ``keys`` that still exist."""
    return [k for k in keys if client.exists(k)]


def wait_keys_gone(client: Any, keys: list[str], *workers: WorkerProcess, timeout: float = 120) -> None:
    """Wait until none of ``keys`` exists while every worker stays alive; on timeout fail naming the keys
    still there and the first worker's log tail."""
    wait_until(
        lambda: all(w.alive_or_fail() for w in workers) and not still_there(client, keys),
        timeout=timeout,
        what=lambda: f"keys still present: {still_there(client, keys)}; log:\n{workers[0].log_tail()}",
    )
