"""The whole product end to end: SQL in Postgres → relay (embedded Debezium) → Kafka → worker → Redis keys vanish.

Each booking source of the seed design is played as the SQL it would issue against a real Postgres; one
relay and one worker subprocess serve the whole module (a JVM start and a group join are the slow parts).
Tests isolate by day: each books on a week of its own, so windows never overlap. Every test seeds the keys
it expects to vanish *and* neighbours that must survive (another company, branch, event type; the hours
just outside the window), then waits -- by polling with a deadline -- until exactly the expected keys are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.e2e_harness import Pipeline, PipelineDeployment, at, topic_partitions

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO appointments (company_id, branch_id, service_id, customer_id, starts_at, ends_at, status, source)"
    " VALUES (%s, %s, %s, 4711, %s, %s, 'scheduled', %s) RETURNING id"
)

# Cal.com's webhook handler does Appointment::updateOrCreate(['calcom_booking_id' => ...], [...]). The
# reference schema has no unique constraint on calcom_booking_id, so INSERT ... ON CONFLICT cannot name it;
# MERGE matches on the column without one and is a single statement, like the upsert it stands for.
WEBHOOK_UPSERT = """
MERGE INTO appointments AS a
USING (VALUES (%s::text, 15::bigint, 1::bigint, 1::bigint, %s::timestamptz, %s::timestamptz))
      AS w (calcom_booking_id, company_id, branch_id, service_id, starts_at, ends_at)
ON a.calcom_booking_id = w.calcom_booking_id
WHEN MATCHED THEN
    UPDATE SET starts_at = w.starts_at, ends_at = w.ends_at, status = 'booked', updated_at = now()
WHEN NOT MATCHED THEN
    INSERT (calcom_booking_id, company_id, branch_id, service_id, starts_at, ends_at, status, source)
    VALUES (w.calcom_booking_id, w.company_id, w.branch_id, w.service_id, w.starts_at, w.ends_at,
            'booked', 'calcom')
"""


@pytest.fixture(scope="module")
def pipeline(
    dev_stack: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """Relay + worker on a fresh database, with unique slot, publication, topics, group, key prefix, port."""
    deployment = PipelineDeployment(dev_stack, Path(tmp_path_factory.mktemp("pipeline")))
    running: Pipeline | None = None
    try:
        running = deployment.start()
        # The notes-only test's sentinel argument needs one partition: then the worker sees changes in
        # commit order, whatever appointment they belong to.
        partitions = topic_partitions(running.settings.kafka_bootstrap, running.settings.appointments_topic)
        assert partitions == 1, f"{running.settings.appointments_topic} has {partitions} partitions"
        yield running
    finally:
        report = running.latency_report() if running is not None else ""
        deployment.stop(running)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if report and reporter is not None and capture is not None:
            # Printed even when the tests pass: the figures are the point (they are not asserted).
            with capture.global_and_fixture_disabled():
                reporter.write_line("")
                for line in report.splitlines():
                    reporter.write_line(f"[pipeline latency] {line}")


@pytest.fixture
def day(pipeline: Pipeline) -> datetime:
    return pipeline.new_day()


def book(
    pipeline: Pipeline, starts: datetime, *, company: int = 15, branch: int = 1, service: int = 1
) -> int:
    """A phone booking of service ``service`` at ``starts`` (one hour), waited for until its keys are gone,
    so that keys seeded afterwards cannot be deleted by it."""
    event_type = {1: 123, 2: 456, 3: 456}[service]
    keys = pipeline.window(company, branch, event_type, starts)
    pipeline.seed(keys)
    row = pipeline.change(
        INSERT, (company, branch, service, starts, starts + timedelta(hours=1), "phone"), gone=keys
    )
    assert row is not None
    return int(row[0])


def ymdh(t: datetime) -> str:
    return f"{t:%Y-%m-%d-%H}"


# --- the booking sources ----------------------------------------------------------------------------------


def test_phone_booking_insert_deletes_the_three_seed_keys_and_no_neighbour(
    pipeline: Pipeline, day: datetime
) -> None:
    """An INSERT at 14:00–15:00 (company 15, branch 1, service 1 → event type 123) deletes the 13, 14 and
    15 o'clock keys; company 20's, another branch's, another event type's and the 12/16 o'clock keys survive."""
    p, d = pipeline.prefix, f"{day:%Y-%m-%d}"
    expected = [
        f"{p}cal_slots_15_1_123_{d}-13_{d}-14",
        f"{p}cal_slots_15_1_123_{d}-14_{d}-15",
        f"{p}cal_slots_15_1_123_{d}-15_{d}-16",
    ]
    assert expected == pipeline.window(15, 1, 123, at(day, 14))
    survivors = [
        f"{p}cal_slots_20_2_123_{d}-14_{d}-15",  # the seed's "Company B"
        f"{p}cal_slots_15_1_123_{d}-12_{d}-13",
        f"{p}cal_slots_15_1_123_{d}-16_{d}-17",
        *pipeline.neighbours(15, 1, 123, at(day, 14)),
    ]
    pipeline.seed(expected + survivors)

    pipeline.change(INSERT, (15, 1, 1, at(day, 14), at(day, 15), "phone"), gone=expected)

    assert pipeline.present(survivors) == survivors


def test_booking_across_midnight_deletes_22_23_and_00_of_the_next_day(
    pipeline: Pipeline, day: datetime
) -> None:
    """23:30–00:30 deletes the 22:00, 23:00 and next day's 00:00 keys, not 21:00 or 01:00."""
    p, d, n = pipeline.prefix, f"{day:%Y-%m-%d}", f"{day + timedelta(days=1):%Y-%m-%d}"
    expected = [
        f"{p}cal_slots_15_1_123_{d}-22_{d}-23",
        f"{p}cal_slots_15_1_123_{d}-23_{n}-00",
        f"{p}cal_slots_15_1_123_{n}-00_{n}-01",
    ]
    survivors = [
        f"{p}cal_slots_15_1_123_{d}-21_{d}-22",
        f"{p}cal_slots_15_1_123_{n}-01_{n}-02",
        f"{p}cal_slots_20_2_123_{d}-23_{n}-00",
    ]
    pipeline.seed(expected + survivors)

    pipeline.change(INSERT, (15, 1, 1, at(day, 23, 30), at(day, 24, 30), "phone"), gone=expected)

    assert pipeline.present(survivors) == survivors


def test_calcom_webhook_upsert_books_and_a_second_delivery_with_a_new_time_reschedules(
    pipeline: Pipeline, day: datetime
) -> None:
    """The webhook's upsert first inserts (new window gone), then, for the same booking id with a new time,
    updates the row: the old and the new window are gone, the neighbours of both survive."""
    booking = f"cal_{day:%Y%m%d}"
    first, second = at(day, 10), at(day, 17)
    old, new = pipeline.window(15, 1, 123, first), pipeline.window(15, 1, 123, second)
    survivors = pipeline.neighbours(15, 1, 123, first) + pipeline.neighbours(15, 1, 123, second)
    pipeline.seed(old + survivors)

    pipeline.change(WEBHOOK_UPSERT, (booking, first, first + timedelta(hours=1)), gone=old)
    assert pipeline.present(survivors) == survivors

    pipeline.seed(old + new)
    pipeline.change(WEBHOOK_UPSERT, (booking, second, second + timedelta(hours=1)), gone=old + new)

    assert pipeline.present(survivors) == survivors
    count = pipeline.sql("SELECT count(*) FROM appointments WHERE calcom_booking_id = %s", (booking,))
    assert count == (1,), "the second delivery must update, not insert"


def test_reschedule_deletes_the_old_and_the_new_window(pipeline: Pipeline, day: datetime) -> None:
    """UPDATE of starts_at/ends_at from 14:00 to 18:00 deletes 13–15 and 17–19; 16 o'clock and the
    neighbours survive."""
    appointment = book(pipeline, at(day, 14))
    old, new = pipeline.window(15, 1, 123, at(day, 14)), pipeline.window(15, 1, 123, at(day, 18))
    between = pipeline.window(15, 1, 123, at(day, 16))[1]
    survivors = [
        between,
        *pipeline.neighbours(15, 1, 123, at(day, 14)),
        *pipeline.neighbours(15, 1, 123, at(day, 18)),
    ]
    survivors = [k for k in survivors if k not in old + new]
    pipeline.seed(old + new + survivors)

    pipeline.change(
        "UPDATE appointments SET starts_at = %s, ends_at = %s, updated_at = now() WHERE id = %s",
        (at(day, 18), at(day, 19), appointment),
        gone=old + new,
    )

    assert pipeline.present(survivors) == survivors


@pytest.mark.parametrize(
    ("source", "statement"),
    [
        ("cancellation", "UPDATE appointments SET status = 'cancelled', updated_at = now() WHERE id = %s"),
        ("hard delete", "DELETE FROM appointments WHERE id = %s"),
        ("soft delete", "UPDATE appointments SET deleted_at = now(), updated_at = now() WHERE id = %s"),
    ],
)
def test_freeing_the_slot_deletes_its_window_and_no_neighbour(
    pipeline: Pipeline, day: datetime, source: str, statement: str
) -> None:
    """A cancellation, a hard delete and a soft delete each delete the booking's three keys, nothing else."""
    appointment = book(pipeline, at(day, 9))
    window = pipeline.window(15, 1, 123, at(day, 9))
    survivors = pipeline.neighbours(15, 1, 123, at(day, 9))
    pipeline.seed(window + survivors)

    pipeline.change(statement, (appointment,), gone=window)

    assert pipeline.present(survivors) == survivors, source


def test_notes_only_update_deletes_nothing(pipeline: Pipeline, day: datetime) -> None:
    """UPDATE of notes (and updated_at) leaves the booking's keys in place."""
    appointment = book(pipeline, at(day, 14))
    window = pipeline.window(15, 1, 123, at(day, 14))
    pipeline.seed(window)

    pipeline.sql(
        "UPDATE appointments SET notes = 'customer will call first', updated_at = now() WHERE id = %s",
        (appointment,),
    )
    # An absence cannot be waited for. The sentinel, committed after the notes update, goes to the same
    # (single) partition of the appointments topic; the worker handles a partition in order and deletes a
    # batch's keys only after handling every change in it, so once the sentinel's keys are gone the notes
    # update has been handled too.
    book(pipeline, at(day, 20))

    assert pipeline.present(window) == window


# --- event types ------------------------------------------------------------------------------------------


def test_service_without_event_type_invalidates_every_event_type_of_the_company(
    pipeline: Pipeline, day: datetime
) -> None:
    """Service 4 (company 20, no cal.com event type) widens to company 20's event types (456 via service 3),
    with the appointment's own branch; event type 123 of company 20 is not the company's and survives."""
    before = pipeline.worker.metric("slotguard_unknown_event_types_total")
    widened = pipeline.window(20, 7, 456, at(day, 14))
    survivors = pipeline.window(20, 7, 123, at(day, 14)) + pipeline.neighbours(20, 7, 456, at(day, 14))
    pipeline.seed(widened + survivors)

    pipeline.change(INSERT, (20, 7, 4, at(day, 14), at(day, 15), "phone"), gone=widened)

    assert pipeline.present(survivors) == survivors
    pipeline.wait_metric("slotguard_unknown_event_types_total", before + 1)


def test_unknown_service_of_a_known_company_invalidates_the_company_event_types(
    pipeline: Pipeline, day: datetime
) -> None:
    """Service 999 exists nowhere: company 15's event types (123 and 456) are invalidated for branch 1,
    with a warning; company 20's keys survive."""
    before = pipeline.worker.metric("slotguard_unknown_event_types_total")
    widened = pipeline.window(15, 1, 123, at(day, 14)) + pipeline.window(15, 1, 456, at(day, 14))
    survivors = pipeline.window(20, 1, 123, at(day, 14)) + pipeline.window(15, 2, 123, at(day, 14))
    pipeline.seed(widened + survivors)

    pipeline.change(INSERT, (15, 1, 999, at(day, 14), at(day, 15), "phone"), gone=widened)

    assert pipeline.present(survivors) == survivors
    pipeline.wait_metric("slotguard_unknown_event_types_total", before + 1)


def test_unknown_service_of_an_unknown_company_warns_and_the_worker_goes_on(
    pipeline: Pipeline, day: datetime
) -> None:
    """Company 77 has no services at all: nothing can be keyed, the worker counts a warning, keeps running,
    and the next booking is invalidated as usual."""
    before = pipeline.worker.metric("slotguard_unknown_event_types_total")
    untouched = pipeline.window(77, 1, 123, at(day, 14))
    pipeline.seed(untouched)

    pipeline.sql(INSERT, (77, 1, 999, at(day, 14), at(day, 15), "phone"))
    book(pipeline, at(day, 20))  # the sentinel: see test_notes_only_update_deletes_nothing

    assert pipeline.present(untouched) == untouched
    pipeline.wait_metric("slotguard_unknown_event_types_total", before + 1)
    health = pipeline.worker.healthz()
    assert health is not None
    assert health[0] == 200, health


# --- the README's main command ----------------------------------------------------------------------------

SLOTGUARD = Path(sys.executable).parent / "slotguard"


def _demo(base: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLOTGUARD_")}
    return subprocess.run(
        [str(SLOTGUARD), "demo", "--dir", str(base), *args],
        env={**clean, **(env or {}), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _processes_under(base: Path) -> list[psutil.Process]:
    """Processes started for the stack in ``base``: servers name it on their command line, the relay and
    the worker run in it."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(base) in cmdline or str(base) in (proc.info["cwd"] or ""):
            found.append(proc)
    return found


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its temp root private (0700), and Postgres runs as another user.
    base = Path(tempfile.mkdtemp(prefix="slotguard-demo-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run([str(SLOTGUARD), "dev", "down", "--dir", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_demo_walkthrough_books_reschedules_cancels_and_leaves_no_process_behind(demo_dir: Path) -> None:
    """``slotguard demo --walkthrough`` on a fresh directory starts the whole stack, shows the three changes'
    keys vanish beside company 20's surviving keys, stops every part and exits 0."""
    result = _demo(demo_dir, "--walkthrough")

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert out.count("commit → keys gone") == 3, out
    assert "✗ deleted!" not in out, out  # a neighbour was deleted
    assert "cal_slots_20_2_123_" in out, out
    assert "✓ kept" in out, out
    assert "stack stopped (5 parts)" in out, out
    assert _processes_under(demo_dir) == []


def test_demo_whose_relay_cannot_start_fails_in_one_line_naming_the_log(demo_dir: Path) -> None:
    """With a JVM that does not exist the relay cannot start: one error line naming relay.log, exit 2, and
    with --down the servers started for it are stopped again."""
    result = _demo(demo_dir, env={"SLOTGUARD_JAVA_HOME": str(demo_dir / "no-such-jvm")})

    assert result.returncode == 2, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("slotguard demo: error: the local stack did not start:"), errors
    assert errors[0].endswith(str(demo_dir / "dev" / "logs" / "relay.log")), errors
    assert _processes_under(demo_dir) == []


def test_the_simulation_orders_the_modes_and_leaves_no_process_behind(demo_dir: Path) -> None:
    """``slotguard demo --compare`` runs the same seeded business in every mode: stale reads fall from
    ttl-only to plain invalidation to the guarded worker, no stale answer outlives the guarded or leased
    invalidation, and the stack is stopped at the end."""
    figures_file = demo_dir / "figures.json"
    result = _demo(demo_dir, "--compare", "--seconds", "15", "--json", str(figures_file))

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    figures = json.loads(figures_file.read_text())
    modes = figures["modes"]
    assert list(modes) == ["ttl-only", "invalidate", "guarded", "lease"]
    stale = {name: modes[name]["stale_reads"] for name in modes}
    summary = json.dumps(
        {
            n: {
                k: modes[n][k]
                for k in (
                    "reads",
                    "hit_rate",
                    "stale_reads",
                    "stale_reads_after_delete",
                    "stale_fills_after_delete",
                )
            }
            for n in modes
        }
    )
    assert stale["ttl-only"] > stale["invalidate"] >= stale["guarded"], summary
    assert modes["guarded"]["stale_reads_after_delete"] == 0, summary
    assert modes["lease"]["stale_fills_after_delete"] == 0, summary
    assert modes["lease"]["stale_reads_after_delete"] == 0, summary
    for name in modes:
        assert modes[name]["reads"] > 0, summary
        assert modes[name]["dlq"] in (0, None), summary
    assert {"workload", "machine"} <= set(figures)
    assert _processes_under(demo_dir) == []
