"""A lost replication slot, for real: the relay stopped, its slot dropped, bookings committed for several
tenants, the relay started again -- it must refuse, say why and what to run; the worker's ``/healthz`` and
``slotguard_source_gap`` must say it too. Then ``slotguard source recover --yes --scope changed``: every key of
the gap's bookings is gone, a tenant with no change keeps its keys, and the pipeline runs again (a new
booking is invalidated) with the worker healthy and the metric back at 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.relay import offsets_file
from slotguard.settings import settings_to_env
from tests.integration.e2e_harness import Pipeline, PipelineDeployment, at
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SLOTGUARD = Path(sys.executable).parent / "slotguard"
GAP_TENANTS = (41, 42)  # book during the gap
QUIET_TENANT = 43  # never books: a scoped flush must leave its keys
INSERT = (
    "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source) "
    "VALUES (%s, 1, 1, %s, %s, 'booked', 'phone') RETURNING id"
)


def _deployed(
    dev_stack: Any, workdir: Path, **overrides: Any
) -> Iterator[tuple[PipelineDeployment, Pipeline]]:
    """Relay and worker on a fresh database; the worker's stall alarm out of the way (the gap must say it)."""
    deployment = PipelineDeployment(dev_stack, workdir, overrides={"source_stall_after": 600.0, **overrides})
    running = None
    try:
        running = deployment.start()
        yield deployment, running
    finally:
        deployment.stop(running)


@pytest.fixture
def pipeline(dev_stack: Any, tmp_path: Path) -> Iterator[tuple[PipelineDeployment, Pipeline]]:
    yield from _deployed(dev_stack, tmp_path)


def _book(p: Pipeline, company: int, starts: datetime) -> list[str]:
    p.sql(INSERT, (company, starts, starts + timedelta(hours=1)))
    return p.window(company, 1, 123, starts)


def _slotguard(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_to_env(p.settings)}
    return subprocess.run(
        [str(SLOTGUARD), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_dropped_slot_stops_the_relay_with_its_cause_and_recover_flushes_the_gap(
    pipeline: tuple[PipelineDeployment, Pipeline],
) -> None:
    deployment, p = pipeline
    day = p.new_day()
    # The pipeline runs: a booking before the gap is invalidated.
    before = p.window(41, 1, 123, at(day, 8))
    p.seed(before)
    p.change(INSERT, (41, at(day, 8), at(day, 9)), gone=before)

    # The relay stops, the slot is lost, bookings land meanwhile -- for two tenants, several each.
    assert deployment.relay.stop()
    assert offsets_file(p.settings).exists()
    p.sql("SELECT pg_drop_replication_slot(%s)", (p.settings.slot_name,))
    stale: list[str] = []
    for i, company in enumerate(GAP_TENANTS * 3):
        stale += _book(p, company, at(day, 10 + i))
    quiet = p.window(QUIET_TENANT, 1, 123, at(day, 10)) + p.window(QUIET_TENANT, 1, 123, at(day, 12))
    p.seed(stale + quiet)  # readers cached the gap's slots as free

    # The relay refuses to start, and says why and what to run.
    deployment.relay.start()
    wait_until(
        lambda: deployment.relay.process.exit_status() is not None,
        timeout=120,
        what=lambda: f"the relay to exit on the gap; log:\n{deployment.relay.process.log_tail()}",
    )
    assert deployment.relay.process.exit_status() == 2
    last = deployment.relay.process.log_tail().strip().splitlines()[-1]
    assert f"replication slot '{p.settings.slot_name}' is missing" in last, last
    assert "the change stream is lost from LSN" in last, last
    assert "slotguard source recover" in last, last

    # The worker says it too: /healthz 503 with the gap, and the metric.
    def worker_reports_the_gap() -> bool:
        health = p.worker.healthz()
        return (
            health is not None
            and health[0] == 503
            and "is missing" in str(health[1].get("source_gap"))
            and p.worker.metric("slotguard_source_gap") == 1
        )

    wait_until(worker_reports_the_gap, timeout=60, what=lambda: f"the gap in /healthz: {p.worker.healthz()}")
    status = _slotguard(p, "source", "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "is missing" in status.stdout, status.stdout
    doctor = _slotguard(p, "doctor", "--only", "postgres")
    assert f"✗ replication slot {p.settings.slot_name}: replication slot" in doctor.stdout, doctor.stdout
    assert "slotguard source recover" in doctor.stdout

    # A dry run changes nothing.
    dry = _slotguard(p, "source", "recover", "--dry-run", "--scope", "changed")
    assert dry.returncode == 0, dry.stderr
    assert "key(s) would be flushed" in dry.stdout
    assert p.present(stale) == stale

    # One step back.
    done = _slotguard(p, "source", "recover", "--yes", "--scope", "changed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert p.present(stale) == [], f"the gap's keys are still cached:\n{done.stdout}"
    assert p.present(quiet) == quiet, "a scoped flush deleted a tenant that did not change"
    assert f"flushed {len(set(stale))} key(s)" in done.stdout, done.stdout

    # The pipeline runs again: the relay streams from the new slot, a new booking is invalidated.
    deployment.relay.start()
    deployment.relay.wait_ready()
    after = p.window(QUIET_TENANT, 1, 123, at(day, 15))
    p.seed(after)
    p.change(INSERT, (QUIET_TENANT, at(day, 15), at(day, 16)), gone=after)
    wait_until(
        lambda: p.worker.metric("slotguard_source_gap") == 0 and (p.worker.healthz() or (0,))[0] == 200,
        timeout=60,
        what=lambda: f"the worker healthy again: {p.worker.healthz()}",
    )
    health = p.worker.healthz()
    assert health is not None
    assert "recovered" in str(health[1].get("source_gap")), health


@pytest.fixture
def self_healing(dev_stack: Any, tmp_path: Path) -> Iterator[tuple[PipelineDeployment, Pipeline]]:
    yield from _deployed(dev_stack, tmp_path, on_source_gap="flush")


def test_with_on_source_gap_flush_the_relay_recovers_by_itself_and_flushes_every_key(
    self_healing: tuple[PipelineDeployment, Pipeline],
) -> None:
    deployment, p = self_healing
    day = p.new_day()
    assert deployment.relay.stop()
    p.sql("SELECT pg_drop_replication_slot(%s)", (p.settings.slot_name,))
    stale = _book(p, 41, at(day, 10)) + _book(p, 42, at(day, 12))
    quiet = p.window(QUIET_TENANT, 1, 123, at(day, 10))
    p.seed(stale + quiet)

    deployment.relay.start()
    deployment.relay.wait_ready()  # recovered, and streaming from the new slot
    assert p.present(stale + quiet) == [], deployment.relay.process.log_tail()
    assert "recovering by itself" in deployment.relay.process.log_tail()

    after = p.window(QUIET_TENANT, 1, 123, at(day, 15))
    p.seed(after)
    p.change(INSERT, (QUIET_TENANT, at(day, 15), at(day, 16)), gone=after)
    wait_until(
        lambda: "recovered" in str((p.worker.healthz() or (0, {}))[1].get("source_gap")),
        timeout=60,
        what=lambda: f"the recovered gap in /healthz: {p.worker.healthz()}",
    )
    assert p.worker.metric("slotguard_source_gap") == 0


def test_recover_on_kafka_connect_stops_resets_and_resumes_the_connector_through_its_rest_api(
    dev_stack: Any, fresh_database: Any, unique_name: Any, tmp_path: Path
) -> None:
    """Kafka Connect cannot run here: a small HTTP server plays its offsets API (Kafka >= 3.6), while
    Postgres, Kafka and Redis are real. The stored offset names an LSN whose slot is gone."""
    from tests.unit.test_connect_api import FakeConnect

    name = unique_name("connect").replace("-", "_")[:40]
    settings = dev_stack.settings(
        database_url=fresh_database,
        slot_name=name,
        publication_name=f"{name}_pub",
        topic_prefix=name,
        redis_key_prefix=f"{name}:",
        data_dir=tmp_path,
    )
    fake = FakeConnect()
    fake.routes[("GET", "/connectors/slotguard-appointments/offsets")] = (
        200,
        {
            "offsets": [
                {"partition": {"server": name}, "offset": {"lsn": 1234, "ts_usec": 1_700_000_000_000_000}}
            ]
        },
    )
    for method, action in (("PUT", "stop"), ("DELETE", "offsets"), ("PUT", "resume")):
        fake.routes[(method, f"/connectors/slotguard-appointments/{action}")] = (200, None)
    fake.thread.start()
    client = __import__("redis").Redis.from_url(dev_stack.redis_url)
    keys = [
        f"{name}:cal_slots_5_1_123_2031-01-01-10_2031-01-01-11",
        f"{name}:cal_slots_6__9_2031-01-01-10_2031-01-01-11",
    ]
    client.set(keys[0], "[]")
    client.set(keys[1], "[]")
    try:
        env = {**os.environ, **settings_to_env(settings), "SLOTGUARD_CONNECT_URL": fake.url}
        status = subprocess.run(
            [str(SLOTGUARD), "source", "status"], env=env, capture_output=True, text=True, check=False
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert "stored position (kafka connect): LSN 0/4D2" in status.stdout
        done = subprocess.run(
            [str(SLOTGUARD), "source", "recover", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        calls = [(m, p) for m, p, _ in fake.requests if m != "GET"]
        assert calls == [
            ("PUT", "/connectors/slotguard-appointments/stop"),
            ("DELETE", "/connectors/slotguard-appointments/offsets"),
            ("PUT", "/connectors/slotguard-appointments/resume"),
        ]
        assert client.exists(*keys) == 0
        assert "The connector was resumed." in done.stdout
    finally:
        fake.server.shutdown()
        client.close()
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(%s) FROM pg_replication_slots WHERE slot_name = %s",
                (name, name),
            )
