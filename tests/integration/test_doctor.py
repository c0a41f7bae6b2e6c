"""``slotguard doctor`` on the real stack: all ✓ on a running pipeline, and each ✗ when its thing is broken."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from slotguard.cli import main
from slotguard.dev.parts import free_port
from slotguard.operate.doctor import Check, run_checks
from slotguard.settings import Settings, settings_to_env
from tests.integration.e2e_harness import Pipeline, PipelineDeployment

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(dev_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    deployment = PipelineDeployment(dev_stack, Path(tmp_path_factory.mktemp("doctor")))
    running: Pipeline | None = None
    try:
        running = deployment.start()
        # A cache key in the configured format, so the key sample finds one.
        running.redis.set(f"{running.prefix}cal_slots_15_1_123_2031-03-03-09_2031-03-03-10", "[]")
        yield running
    finally:
        deployment.stop(running)


def _by_name(checks: list[Check], start: str) -> Check:
    found = [c for c in checks if c.name.startswith(start)]
    assert found, f"no check named {start!r} in {[c.name for c in checks]}"
    return found[0]


def _failed(checks: list[Check]) -> list[str]:
    return [c.line() for c in checks if c.status == "fail"]


def test_a_running_pipeline_is_all_green(pipeline: Pipeline) -> None:
    checks = run_checks(pipeline.settings)
    assert [c.line() for c in checks if c.status != "ok"] == []
    names = " ".join(c.name for c in checks)
    for part in (
        "wal_level",
        "replication slot",
        "publication",
        "CDC topic",
        "DLQ topic",
        "worker group",
        "redis probe",
    ):
        assert part in names


def test_the_cli_prints_one_line_per_check_and_exits_0(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in settings_to_env(pipeline.settings).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.count("✓") >= 15
    assert main(["doctor", "--json", "--only", "redis"]) == 0
    assert '"status": "ok"' in capsys.readouterr().out


def test_a_table_without_replica_identity_full_fails_with_the_alter_to_run(pipeline: Pipeline) -> None:
    pipeline.sql("ALTER TABLE appointments REPLICA IDENTITY DEFAULT")
    try:
        check = _by_name(run_checks(pipeline.settings, ["postgres"]), "table public.appointments")
        assert check.status == "fail"
        assert check.fix == 'ALTER TABLE "public"."appointments" REPLICA IDENTITY FULL;'
        pipeline.sql(check.fix)  # the fix as printed is the fix
        assert (
            _by_name(run_checks(pipeline.settings, ["postgres"]), "table public.appointments").status == "ok"
        )
    finally:
        pipeline.sql("ALTER TABLE appointments REPLICA IDENTITY FULL")


def test_a_dropped_slot_fails(pipeline: Pipeline) -> None:
    slot = f"{pipeline.settings.slot_name}_x"
    pipeline.sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    settings = pipeline.settings.model_copy(update={"slot_name": slot})
    assert _by_name(run_checks(settings, ["postgres"]), "replication slot").status == "warn"  # inactive
    pipeline.sql("SELECT pg_drop_replication_slot(%s)", (slot,))
    check = _by_name(run_checks(settings, ["postgres"]), "replication slot")
    assert check.status == "fail"
    assert "does not exist" in check.detail


def test_a_missing_topic_fails_naming_the_fix(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(update={"dlq_topic": f"{pipeline.settings.dlq_topic}.gone"})
    check = _by_name(run_checks(settings, ["kafka"]), "DLQ topic")
    assert (check.status, check.fix) == ("fail", "slotguard topics apply")


def test_a_wrong_redis_prefix_warns_that_no_key_matches(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(update={"redis_key_prefix": "wrong_prefix:"})
    checks = run_checks(settings, ["redis"])
    assert _by_name(checks, "redis probe key").status == "ok"
    check = _by_name(checks, "cache keys")
    assert check.status == "warn"
    assert "prefix" in check.fix


def test_redis_without_the_guards_keyspace_events_warns_and_with_them_passes(pipeline: Pipeline) -> None:
    import redis

    client = redis.Redis.from_url(pipeline.settings.redis_url.get_secret_value())
    before = str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])
    try:
        client.config_set("notify-keyspace-events", "")
        check = _by_name(run_checks(pipeline.settings, ["redis"]), "keyspace events")
        assert (check.status, "'K$m'" in check.detail) == ("warn", True)
        client.config_set("notify-keyspace-events", "AKm")
        assert _by_name(run_checks(pipeline.settings, ["redis"]), "keyspace events").status == "ok"
    finally:
        client.config_set("notify-keyspace-events", before)


def test_redis_down_fails(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(
        update={"redis_url": SecretStr(f"redis://:hunter2@127.0.0.1:{free_port()}/0")}
    )
    checks = run_checks(settings, ["redis"])
    assert _failed(checks)
    assert "reachable" in _failed(checks)[0]
    assert "hunter2" not in " ".join(c.line() for c in checks)


def test_wrong_database_credentials_fail_without_showing_the_password(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The dev Postgres trusts local connections, so a wrong password alone would pass: the user is wrong too.
    parts = urlsplit(pipeline.database_url)
    wrong = urlunsplit(parts._replace(netloc=f"no_such_user:s3cret-wrong@{parts.hostname}:{parts.port}"))
    settings: Settings = pipeline.settings.model_copy(update={"database_url": SecretStr(wrong)})
    for key, value in settings_to_env(settings).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--only", "postgres"]) == 1
    out = capsys.readouterr().out
    assert "✗ postgres reachable" in out
    assert "s3cret-wrong" not in out


def test_a_slot_that_is_not_a_failover_slot_warns_with_the_way_to_recreate_it(pipeline: Pipeline) -> None:
    slot = f"{pipeline.settings.slot_name}_nf"
    pipeline.sql("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        settings = pipeline.settings.model_copy(update={"slot_name": slot})
        check = _by_name(run_checks(settings, ["postgres"]), "failover slot")
        assert check.status == "warn"
        assert "slotguard source recover" in check.fix
        # The relay's own slot is one (Debezium's slot.failover, on Postgres >= 17).
        assert _by_name(run_checks(pipeline.settings, ["postgres"]), "failover slot").status == "ok"
    finally:
        pipeline.sql("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_a_wal_keep_limit_warns_that_it_can_invalidate_the_slot(pipeline: Pipeline) -> None:
    assert _by_name(run_checks(pipeline.settings, ["postgres"]), "max_slot_wal_keep_size").status == "ok"
    pipeline.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pipeline.sql("SELECT pg_reload_conf()")
    try:
        checks = run_checks(pipeline.settings, ["postgres"])
        assert _by_name(checks, "max_slot_wal_keep_size").status == "warn"
        assert _by_name(checks, "slot headroom").status == "ok"
    finally:
        pipeline.sql("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pipeline.sql("SELECT pg_reload_conf()")


def test_no_heartbeat_action_query_warns(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(update={"heartbeat_action_query": ""})
    check = _by_name(run_checks(settings, ["postgres"]), "heartbeat")
    assert check.status == "warn"
    assert "SLOTGUARD_HEARTBEAT_ACTION_QUERY" in check.fix
