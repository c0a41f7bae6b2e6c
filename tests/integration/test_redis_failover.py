"""A Sentinel-managed primary killed with ``kill -9``: what asynchronous replication loses, and that WAIT closes
it. Real processes: a primary, its replica and three Sentinels from ``slotguard dev up --redis sentinel``.

The replica is held back with ``DEBUG SLEEP`` -- on loopback it otherwise applies a write within
microseconds, and the hole would only show by luck -- so the primary acknowledges deletes its replica does
not have yet, and then dies; the Sentinels promote the replica.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from processor.worker.errors import RedisUnavailable
from processor.worker.invalidator import RedisInvalidator
from processor.worker.metrics import WorkerMetrics
from schemas.connections import RedisConnection
from slotguard.dev.redis import SENTINEL_MASTER
from slotguard.dev.stack import DevStack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

KEYS = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    base = Path(tmp_path_factory.mktemp("sentinel"))
    stack = DevStack(base, redis="sentinel")
    stack.up(infra_only=True)
    try:
        yield stack
    finally:
        stack.down()


class Topology:
    def __init__(self, stack: DevStack) -> None:
        info = stack.info()
        assert info is not None
        self.stack = stack
        self.url = info.redis_url
        conn = RedisConnection.parse(self.url)
        self.sentinel = Sentinel(list(conn.nodes), socket_timeout=1)

    def primary(self) -> tuple[str, int]:
        host, port = self.sentinel.discover_master(SENTINEL_MASTER)
        return str(host), int(port)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def pid_on(self, port: int) -> int:
        found = [s.pid for s in self.stack.status() if s.port == port and s.pid]
        assert found, f"no process on port {port}"
        return found[0]

    def replica_port(self, primary: int) -> int:
        """The port of the primary's replica, from the primary itself (``slave0:ip=...,port=...``)."""
        replica = self.client(primary).info("replication").get("slave0")
        assert isinstance(replica, dict), f"no replica of {primary}"
        return int(replica["port"])

    def seed(self, keys: list[str]) -> None:
        primary = self.client(self.primary()[1])
        primary.mset(dict.fromkeys(keys, "[]"))
        assert primary.wait(1, 5000) == 1, "the replica did not get the seeded keys"
        primary.close()

    def hold_replica(self, port: int, seconds: float) -> threading.Thread:
        """Stop the replica reading for ``seconds`` and queue 40 MB of writes in front of whatever comes
        next: the kernel's socket buffers fill, so the next writes wait in the primary's own memory -- where a
        kill -9 takes them with it. (Without the filler a loopback replica has every write in its socket
        buffer before the primary can die, and the hole does not show.)"""

        def sleep() -> None:
            client = self.client(port)
            try:
                client.execute_command("DEBUG", "SLEEP", seconds)  # type: ignore[no-untyped-call]
            finally:
                client.close()

        thread = threading.Thread(target=sleep)
        thread.start()
        primary = self.client(self.primary()[1])
        wait_until(
            lambda: int(primary.info("replication")["slave0"].get("lag", 0)) >= 1,
            timeout=10,
            what="the replica to stop reading",
        )
        for i in range(40):
            primary.set(f"filler:{i}", b"x" * (1 << 20))
        primary.close()
        return thread

    def fail_over(self, old: int) -> int:
        """kill -9 the primary on ``old``; the new primary's port once the Sentinels promoted it."""
        os.kill(self.pid_on(old), signal.SIGKILL)

        def promoted() -> int | None:
            try:
                port = self.primary()[1]
            except MasterNotFoundError:  # the Sentinels see the primary down, none promoted yet
                return None
            return port if port != old else None

        found: int = wait_until(promoted, timeout=60, what="the Sentinels to promote the replica")
        return found

    def views(self) -> list[int | None]:
        """The primary's port as each Sentinel names it (``None``: it did not answer)."""
        ports: list[int | None] = []
        for one in self.sentinel.sentinels:
            try:
                addr = one.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            except redis.RedisError:
                addr = None
            ports.append(int(addr[1]) if isinstance(addr, tuple | list) else None)
        return ports

    def heal(self) -> None:
        """Start the killed server again; the Sentinels make it the new primary's replica."""
        self.stack.up(infra_only=True)

        def online() -> bool:
            # Asked anew each time, of every Sentinel: one that has not yet heard of the failover names the
            # restarted server, which answers as a primary until the others turn it into a replica.
            named = set(self.views())
            if len(named) != 1:
                return False
            (primary,) = named
            if primary is None:
                return False
            replica = self.client(primary).info("replication").get("slave0")
            return isinstance(replica, dict) and replica.get("state") == "online"

        def still() -> str:
            views = self.views()
            where = next((p for p in views if p is not None), None)
            info = self.client(where).info("replication") if where is not None else {}
            return (
                f"the Sentinels to agree on a primary with an online replica; they name {views}, whose "
                + str({k: v for k, v in info.items() if "slave" in k or k == "role"})
            )

        # A full resync of the primary's ~80 MB (two rounds of filler) on a slow, shared 2-core machine has
        # taken over a minute: the topology is only being restored for the next test here.
        wait_until(online, timeout=180, what=still)


def _invalidator(url: str, wait_replicas: int) -> RedisInvalidator:
    return RedisInvalidator(
        RedisConnection.parse(url),
        metrics=WorkerMetrics(),
        wait_replicas=wait_replicas,
        wait_timeout=0.5,
        second_delete_after=0.0,
        key_prefix="",
        guard_window=0.0,
        revoke_leases=False,
    )


async def _unlink_until_acknowledged(invalidator: RedisInvalidator, keys: list[str], deadline: float) -> int:
    """What the failure policy does: retry the batch until Redis acknowledges (here with a deadline)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            return await invalidator.unlink(keys)
        except RedisUnavailable:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.2)  # the policy's backoff


def test_without_wait_a_failover_loses_acknowledged_deletes_and_with_wait_none(stack: DevStack) -> None:
    topo = Topology(stack)

    # 1. No WAIT: the primary acknowledges, dies before its replica has the deletes; they are lost.
    keys = [f"cal_slots_15_1_123_2031-01-01-{h % 24:02d}_x{h}" for h in range(KEYS)]
    topo.seed(keys)
    primary = topo.primary()[1]
    held = topo.hold_replica(topo.replica_port(primary), 4)
    acknowledged = asyncio.run(_invalidator(topo.url, 0).unlink(keys))
    assert acknowledged == KEYS
    promoted = topo.fail_over(primary)
    held.join()
    lost = topo.client(promoted).exists(*keys)
    assert lost == KEYS, f"expected every acknowledged delete lost without WAIT, {lost} were"
    topo.heal()

    # 2. WAIT 1: the batch is not acknowledged until the replica has it; retried across the failover.
    keys = [f"cal_slots_16_1_123_2031-01-01-{h % 24:02d}_x{h}" for h in range(KEYS)]
    topo.seed(keys)
    primary = topo.primary()[1]
    held = topo.hold_replica(topo.replica_port(primary), 4)
    waiting = _invalidator(topo.url, 1)
    with pytest.raises(RedisUnavailable, match="0 of 1 replica"):
        asyncio.run(waiting.unlink(keys))
    promoted = topo.fail_over(primary)
    held.join()
    asyncio.run(_unlink_until_acknowledged(_invalidator(topo.url, 1), keys, deadline=60))
    assert topo.client(promoted).exists(*keys) == 0
    topo.heal()
