"""kill -9 of a Redis primary under load, on a Redis Cluster (its replica promoted) and behind Sentinels: the
whole local stack (``slotguard dev up --redis cluster|sentinel``: Postgres, broker, relay, worker) takes a
steady stream of bookings while the primary dies. Zero lost invalidations (every booked window's keys gone),
zero foreign deletions (a tenant nobody books keeps its keys), the worker resumes by itself, and
``/healthz`` answers 503 during the failover and 200 after.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from schemas.connections import RedisConnection
from slotguard.dev.redis import SENTINEL_MASTER
from slotguard.dev.stack import DevStack, StackInfo
from tests.integration.worker_harness import window_keys
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FIRST_DAY = datetime(2034, 1, 2, tzinfo=UTC)
QUIET_COMPANY = 21  # nobody books for it
BOOKINGS_BEFORE, BOOKINGS_AFTER = 30, 60


def _retrying(step: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """The test's own Redis calls ride out the failover too (a write to a dead primary is retried)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the failover has no event to wait on


class Cache:
    """The test's view of the cache, whichever topology."""

    def __init__(self, info: StackInfo) -> None:
        conn = RedisConnection.parse(info.redis_url)
        self.kind = conn.kind
        if conn.kind == "cluster":
            nodes = [ClusterNode(h, p) for h, p in conn.nodes]  # type: ignore[no-untyped-call]
            self.client: Any = RedisCluster(startup_nodes=nodes)
            self.sentinel = None
        else:
            self.sentinel = Sentinel(list(conn.nodes), socket_timeout=1)
            self.client = self.sentinel.master_for(SENTINEL_MASTER, socket_timeout=2)

    def seed(self, keys: list[str]) -> None:
        for key in keys:
            _retrying(functools.partial(self.client.set, key, "[]"), f"seeding {key}")

    def present(self, keys: list[str]) -> list[str]:
        return [k for k in keys if _retrying(functools.partial(self.client.exists, k), f"reading {k}")]

    def victim_port(self, key: str) -> int:
        """The port of the primary that serves ``key`` (cluster) or of the primary (Sentinel)."""
        if self.kind == "cluster":
            return int(self.client.get_node_from_key(key).port)
        assert self.sentinel is not None
        return int(self.sentinel.discover_master(SENTINEL_MASTER)[1])


class Health:
    """Polls the worker's /healthz every 100 ms and keeps the codes in order."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    self.codes.append(int(response.status))
            except urllib.error.HTTPError as exc:
                self.codes.append(exc.code)
            except OSError:
                self.codes.append(0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(params=["cluster", "sentinel"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    # Not tmp_path: pytest keeps its temp root private (0700), and Postgres runs as another user.
    base = Path(tmp_path_factory.mktemp(f"topology-{request.param}"))
    base.chmod(0o755)
    stack = DevStack(base, redis=request.param)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_killing_a_primary_under_load_loses_no_invalidation(stack: DevStack) -> None:
    info = stack.info()
    assert info is not None
    cache = Cache(info)
    quiet = [
        k
        for d in range(3)
        for k in window_keys("", QUIET_COMPANY, 1, 123, FIRST_DAY + timedelta(hours=10 + d))
    ]
    cache.seed(quiet)
    expected: list[str] = []
    health = Health(info.web_port)

    def book(i: int) -> None:
        starts = FIRST_DAY + timedelta(days=1 + i // 8, hours=8 + i % 8)
        keys = window_keys("", 15, 1, 123, starts)
        cache.seed(keys)  # a reader cached the slot before the booking
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status) "
                "VALUES (15, 1, 1, %s, %s, 'booked')",
                (starts, starts + timedelta(hours=1)),
            )
        expected.extend(keys)

    try:
        for i in range(BOOKINGS_BEFORE):
            book(i)
            time.sleep(0.05)  # a booking rate, not a wait for the pipeline
        victim = cache.victim_port(expected[-1])
        pid = next(s.pid for s in stack.status() if s.port == victim and s.pid)
        os.kill(pid, signal.SIGKILL)
        for i in range(BOOKINGS_BEFORE, BOOKINGS_BEFORE + BOOKINGS_AFTER):
            book(i)
            time.sleep(0.05)
        wait_until(
            lambda: not cache.present(expected),
            timeout=120,
            what=lambda: f"every booked key gone; still cached: {cache.present(expected)[:10]}",
        )
        wait_until(
            lambda: health.codes[-1:] == [200], timeout=60, what=lambda: f"/healthz 200: {health.codes[-20:]}"
        )
    finally:
        health.stop()
    assert cache.present(quiet) == quiet, "a tenant nobody booked lost keys"
    assert 503 in health.codes, (
        f"/healthz never answered 503 during the failover: {sorted(set(health.codes))}"
    )
    # The worker resumed by itself: the same process handled bookings before and after.
    assert len([s for s in stack.status() if s.name == "worker" and s.running]) == 1
