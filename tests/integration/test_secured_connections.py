"""The worker against a Redis that demands an ACL user's password over TLS (a throw-away CA made in the
test), and no secret in anything the worker or the operator commands write."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from slotguard.cli import main
from slotguard.dev.parts import free_port
from slotguard.settings import settings_to_env
from tests.integration.worker_harness import (
    BASE,
    Topics,
    WorkerProcess,
    change,
    make_topics,
    produce,
    row,
    wait_keys_gone,
    window_keys,
    worker_settings,
)
from tests.support.tls import loopback_certificate
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "hunter2-redis-Secret"
PG_PASSWORD = "pg-Secret-4711"
KAFKA_PASSWORD = "kafka-Secret-0815"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path, redis.Redis]]:
    """redis-server with TLS only (no plain port), an ACL user ``slotguard``, the default user disabled."""
    ca_file, cert_file, key_file = loopback_certificate(tmp_path)
    port = free_port()
    log = (tmp_path / "redis.log").open("ab")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--user", "default", "off", "--user", "slotguard", "on", f">{REDIS_PASSWORD}", "~*", "+@all"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_file), username="slotguard",
        password=REDIS_PASSWORD, decode_responses=True,
    )  # fmt: skip

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {(tmp_path / 'redis.log').read_text()[-2000:]}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    wait_until(answers, timeout=20, what="redis-server with TLS (a build without TLS cannot run this test)")
    try:
        yield port, ca_file, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_worker_invalidates_through_tls_with_an_acl_user_and_no_secret_leaks(
    dev_stack: Any,
    topics: Topics,
    tls_redis: tuple[int, Path, redis.Redis],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, ca_file, client = tls_redis
    make_topics(dev_stack.kafka_bootstrap, {topics.appointments: 1})
    database = dev_stack.database_url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{PG_PASSWORD}@"
    )
    assert PG_PASSWORD in database
    settings = worker_settings(
        dev_stack,
        topics,
        "",
        redis_url=SecretStr(f"rediss://slotguard:{REDIS_PASSWORD}@127.0.0.1:{port}/0"),
        redis_ca_file=ca_file,
        database_url=SecretStr(database),
        kafka_password=SecretStr(KAFKA_PASSWORD),  # unused by PLAINTEXT, but must never be shown either
        kafka_username="slotguard",
        log_level="DEBUG",
    )
    keys = window_keys("", 15, 1, 123, BASE + timedelta(hours=3))
    for key in keys:
        client.set(key, "cached")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        produce(
            dev_stack.kafka_bootstrap,
            topics.appointments,
            [(b"1", change("c", None, row(1, starts=BASE + timedelta(hours=3))), None)],
        )
        wait_keys_gone(client, keys, worker)
        health = worker.healthz()
        assert health is not None
        assert health[0] == 200
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        healthz = str(health[1])
    finally:
        worker.stop()
    for key, value in settings_to_env(settings).items():
        monkeypatch.setenv(key, value)
    main(["doctor"])
    main(["connector", "render"])
    main(["connector", "render", "--format", "strimzi"])
    operator_output = capsys.readouterr()
    written = {
        "worker log": (tmp_path / "worker.log").read_text(encoding="utf-8", errors="replace"),
        "/metrics": metrics,
        "/healthz": healthz,
        "doctor and connector render": operator_output.out + operator_output.err,
    }
    assert "✓ redis reachable" in written["doctor and connector render"]
    # The ACL user has keys but no channels (Redis 7's default): the invalidation must not depend on the
    # guard's announcement, and the guard says once why it is off.
    assert written["worker log"].count("keyspace guard off: the Redis user may not subscribe") == 1
    for where, text in written.items():
        for secret in (REDIS_PASSWORD, PG_PASSWORD, KAFKA_PASSWORD):
            assert secret not in text, f"{where} shows a password"
