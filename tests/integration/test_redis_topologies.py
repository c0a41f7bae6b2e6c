"""On a Redis Cluster and behind Sentinels (``slotguard dev up --redis cluster|sentinel``): ``slotguard doctor``
all ✓ when healthy and each ✗ or ! when its thing is broken for real; ``slotguard flush`` walks every primary."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from schemas.connections import RedisConnection
from slotguard.dev.redis import SENTINEL_MASTER
from slotguard.dev.stack import DevStack
from slotguard.operate.doctor import Check, run_checks
from slotguard.settings import Settings, default_settings
from tests.support.tls import loopback_certificate
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _stack(tmp_path_factory: pytest.TempPathFactory, topology: str) -> Iterator[DevStack]:
    stack = DevStack(Path(tmp_path_factory.mktemp(topology)), redis=topology)  # type: ignore[arg-type]
    stack.up(infra_only=True)
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    yield from _stack(tmp_path_factory, "cluster")


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    yield from _stack(tmp_path_factory, "sentinel")


def _settings(stack: DevStack, **overrides: Any) -> Settings:
    info = stack.info()
    assert info is not None
    update = {"redis_url": info.redis_url, **overrides}
    update["redis_url"] = SecretStr(str(update["redis_url"]))
    return default_settings().model_copy(update=update)


def _redis_checks(settings: Settings) -> list[Check]:
    return run_checks(settings, ["redis"])


def _named(checks: list[Check], start: str) -> list[Check]:
    return [c for c in checks if c.name.startswith(start)]


def _slots(stack: DevStack) -> dict[tuple[int, int], int]:
    """Slot range -> the port of the primary serving it (CLUSTER SLOTS)."""
    info = stack.info()
    assert info is not None
    client = redis.Redis(port=RedisConnection.parse(info.redis_url).nodes[0][1])
    try:
        ranges = client.cluster("SLOTS")
    finally:
        client.close()
    # Each entry: [first slot, last slot, [primary host, port, id], [replica ...] ...]
    return {(int(r[0]), int(r[1])): int(r[2][1]) for r in ranges}


def _primaries(stack: DevStack) -> list[redis.Redis]:
    return [redis.Redis(port=port) for port in sorted(set(_slots(stack).values()))]


def _events_on(primaries: list[redis.Redis], flags: str) -> None:
    for node in primaries:
        node.config_set("notify-keyspace-events", flags)


def test_a_healthy_cluster_is_all_green_and_every_primary_is_checked(cluster: DevStack) -> None:
    _events_on(_primaries(cluster), "K$m")
    checks = _redis_checks(_settings(cluster))
    assert [c.line() for c in checks if c.status != "ok"] == []
    assert len(_named(checks, "primary ")) == 3
    assert len(_named(checks, "keyspace events on ")) == 3
    assert _named(checks, "cluster slots")[0].detail.startswith("all 16384 served")


def test_one_primary_without_keyspace_events_is_named(cluster: DevStack) -> None:
    primaries = _primaries(cluster)
    _events_on(primaries, "K$m")
    primaries[1].config_set("notify-keyspace-events", "")
    try:
        warned = [c for c in _redis_checks(_settings(cluster)) if c.status == "warn"]
        port = primaries[1].connection_pool.connection_kwargs["port"]
        assert [c.name for c in warned] == [f"keyspace events on 127.0.0.1:{port}"]
    finally:
        _events_on(primaries, "K$m")


def test_an_unserved_slot_fails_with_the_fix(cluster: DevStack) -> None:
    primaries = _primaries(cluster)
    _events_on(primaries, "K$m")
    owner = redis.Redis(port=next(port for (low, _high), port in _slots(cluster).items() if low == 0))
    owner.execute_command("CLUSTER", "DELSLOTS", 0)  # type: ignore[no-untyped-call]
    try:
        checks = _redis_checks(_settings(cluster))
        assert _named(checks, "cluster slots"), [c.line() for c in checks]
        check = _named(checks, "cluster slots")[0]
        assert check.status == "fail"
        assert check.detail.startswith("1 of 16384 slots not served")
        assert "--cluster fix" in check.fix
    finally:
        owner.execute_command("CLUSTER", "ADDSLOTS", 0)  # type: ignore[no-untyped-call]
        wait_until(
            lambda: owner.cluster("INFO").get("cluster_state") == "ok",
            timeout=30,
            what="the slot served again",
        )


def test_behind_sentinels_a_wrong_master_name_fails_and_a_lost_replica_warns(sentinel: DevStack) -> None:
    settings = _settings(sentinel)
    checks = _redis_checks(settings)
    assert [c.line() for c in checks if c.status == "fail"] == []
    # A Sentinel links to the replica a moment after it learnt of it.
    wait_until(
        lambda: _named(_redis_checks(settings), "sentinel replicas")[0].status == "ok",
        timeout=30,
        what=lambda: f"the Sentinels to see the replica up: {[c.line() for c in _redis_checks(settings)]}",
    )

    wrong = settings.redis_url.get_secret_value().replace(f"/{SENTINEL_MASTER}/", "/nobody/")
    reachable = _named(_redis_checks(_settings(sentinel, redis_url=wrong)), "redis reachable")[0]
    assert reachable.status == "fail"
    assert "No master found for 'nobody'" in reachable.detail
    replica = next(s for s in sentinel.status() if s.name == "redis-replica")
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGKILL)
    try:
        wait_until(
            lambda: _named(_redis_checks(settings), "sentinel replicas")[0].status == "warn",
            timeout=30,
            what="the Sentinels to see the replica down",
        )
    finally:
        sentinel.up(infra_only=True)


def test_a_flush_on_a_cluster_walks_every_primary_and_keeps_other_companies(cluster: DevStack) -> None:
    import asyncio

    from redis.cluster import ClusterNode, RedisCluster

    from slotguard.operate.source import count_keys, run_flush, tenant_scope

    settings = _settings(cluster, redis_key_prefix="flushtest:")
    nodes = [ClusterNode(h, p) for h, p in RedisConnection.parse(settings.redis_url).nodes]  # type: ignore[no-untyped-call]
    client = RedisCluster(startup_nodes=nodes)
    mine = [
        f"flushtest:cal_slots_15_{b}_123_2031-01-01-{h:02d}_2031-01-01-{h:02d}"
        for b in range(20)
        for h in range(24)
    ]
    others = [k.replace("_15_", "_150_") for k in mine[:100]]
    for key in mine + others:
        client.set(key, "[]")
    try:
        spread = {client.get_node_from_key(k).name for k in mine}  # type: ignore[no-untyped-call]
        assert len(spread) == 3, "the keys should sit on every primary"
        scope = tenant_scope(settings, "15", None)
        assert asyncio.run(count_keys(settings, scope)) == len(mine)
        done = asyncio.run(run_flush(settings, scope))
        assert done.deleted == len(mine)
        assert sum(client.exists(k) for k in mine) == 0
        assert sum(client.exists(k) for k in others) == len(others)
    finally:
        for key in others:
            client.delete(key)
        client.close()


def test_a_batch_after_a_resharding_is_retried_on_the_new_slot_map_and_deletes_every_key(
    cluster: DevStack,
) -> None:
    import asyncio
    import shutil
    import subprocess

    from processor.worker.errors import RedisUnavailable
    from processor.worker.invalidator import RedisInvalidator
    from processor.worker.metrics import WorkerMetrics

    settings = _settings(cluster)
    conn = RedisConnection.parse(settings.redis_url)
    invalidator = RedisInvalidator(
        conn, metrics=WorkerMetrics(), wait_replicas=1, wait_timeout=2.0, second_delete_after=0.0,
        key_prefix="reshard:", guard_window=0.0, revoke_leases=False,
    )  # fmt: skip
    slots = _slots(cluster)
    (low, _high), source = min(slots.items())
    target = next(port for port in set(slots.values()) if port != source)
    probe = redis.Redis(port=source)
    keys = [
        k
        for k in (f"reshard:cal_slots_15_1_123_{i}" for i in range(200_000))
        if probe.cluster("KEYSLOT", k) == low
    ][:20]
    ids = {
        int(addr.split("@")[0].rsplit(":", 1)[1]): node["node_id"]
        for addr, node in probe.cluster("NODES").items()
    }
    probe.close()

    async def scenario() -> None:
        await invalidator.unlink(["reshard:warm-up"])  # the slot map is read, slot `low` on `source`
        cli = shutil.which("redis-cli") or "redis-cli"
        reshard = [cli, "--cluster", "reshard", f"127.0.0.1:{source}", "--cluster-from", ids[source],
                   "--cluster-to", ids[target], "--cluster-slots", "1", "--cluster-yes"]  # fmt: skip
        moved = await asyncio.to_thread(subprocess.run, reshard, capture_output=True, text=True, timeout=60)
        assert moved.returncode == 0, moved.stdout[-500:] + moved.stderr[-500:]
        owner = redis.Redis(port=target)
        owner.mset(dict.fromkeys(keys, "[]"))  # cached where the slot lives now
        # The invalidator still routes slot `low` to `source`: that attempt fails, the next one reads the map.
        with pytest.raises(RedisUnavailable):
            await invalidator.unlink(keys)
        assert await invalidator.unlink(keys) == len(keys)
        assert owner.exists(*keys) == 0
        owner.close()
        await invalidator.close()

    asyncio.run(scenario())


def test_a_user_who_may_not_run_the_script_fails_on_every_primary(cluster: DevStack) -> None:
    _events_on(_primaries(cluster), "K$m")
    nodes = [redis.Redis(port=p) for p in {port for port in _slots(cluster).values()}]
    everyone = [redis.Redis(port=p) for _h, p in RedisConnection.parse(_settings(cluster).redis_url).nodes]
    for node in nodes + everyone:
        node.acl_setuser("noeval", enabled=True, passwords=["+s3cret-noeval"], keys=["*"], channels=["*"],
                         commands=["+@all", "-eval", "-evalsha"])  # fmt: skip
    try:
        info = cluster.info()
        assert info is not None
        url = info.redis_url.replace("redis+cluster://", "redis+cluster://noeval:s3cret-noeval@")
        checks = _redis_checks(_settings(cluster, redis_url=url))
        failed = [c for c in checks if c.status == "fail"]
        assert len(failed) == 3, [c.line() for c in checks]
        assert all(c.name.startswith("primary ") and "cannot run there" in c.detail for c in failed)
        assert all("NOPERM" in c.detail or "permission" in c.detail for c in failed)
        assert "s3cret-noeval" not in " ".join(c.line() for c in checks)
    finally:
        for node in nodes + everyone:
            node.acl_deluser("noeval")
            node.close()


def _invalidated_and_checked(url: str, ca_file: Path, password: str, *, wait_replicas: int) -> list[Check]:
    """Through ``url`` (TLS with ``ca_file``): cached keys are all deleted by a batch's UNLINK with
    ``wait_replicas``, and doctor's Redis checks pass without showing the password; the checks."""
    import asyncio

    from processor.worker.invalidator import RedisInvalidator
    from processor.worker.metrics import WorkerMetrics
    from processor.worker.redis_connect import redis_client

    conn = RedisConnection.parse(url, ca_file=str(ca_file))
    keys = [f"cal_slots_15_{b}_123_2031-01-01-10_2031-01-01-11" for b in range(60)]

    async def cache_and_invalidate() -> tuple[int, int]:
        client = redis_client(conn)
        for key in keys:
            await client.set(key, "[]")
        invalidator = RedisInvalidator(
            conn, metrics=WorkerMetrics(), wait_replicas=wait_replicas, wait_timeout=5.0,
            second_delete_after=1.0, key_prefix="", guard_window=0.0, revoke_leases=True, client=client,
        )  # fmt: skip
        deleted = await invalidator.unlink(keys)
        left = sum([int(await client.exists(k)) for k in keys])
        await invalidator.close()
        return deleted, left

    assert asyncio.run(cache_and_invalidate()) == (len(keys), 0)  # every key deleted, none left
    checks = run_checks(
        default_settings().model_copy(update={"redis_url": SecretStr(url), "redis_ca_file": ca_file}),
        ["redis"],
    )
    assert [c.line() for c in checks if c.status == "fail"] == []
    assert password not in " ".join(c.line() for c in checks)
    return checks


def test_a_cluster_with_tls_and_an_acl_user_is_invalidated_and_checked(tmp_path: Path) -> None:
    """rediss+cluster:// with a user and password: TLS-only nodes (a throw-away CA), the default user off."""
    import shutil
    import subprocess

    from slotguard.dev.parts import free_port

    password = "tls-Cluster-Secret"
    ca_file, cert_file, key_file = loopback_certificate(tmp_path)
    tls = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
           "--tls-auth-clients", "no"]  # fmt: skip
    ports = [free_port() for _ in range(3)]
    procs = []
    for port in ports:
        data = tmp_path / str(port)
        data.mkdir()
        argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", *tls,
                "--tls-cluster", "yes", "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", "nodes.conf", "--dir", str(data), "--save", "", "--appendonly", "no",
                "--user", "default", "off", "--user", "slotguard", "on", f">{password}", "~*", "&*", "+@all"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=(data / "log").open("ab"), stderr=subprocess.STDOUT))
    cli = [shutil.which("redis-cli") or "redis-cli", "--tls", "--cacert", str(ca_file), "--user", "slotguard",
           "--pass", password, "--no-auth-warning"]  # fmt: skip
    try:
        wait_until(
            lambda: all(
                subprocess.run(
                    [*cli, "-p", str(p), "PING"], capture_output=True, text=True, check=False
                ).stdout.strip()
                == "PONG"
                for p in ports
            ),
            timeout=20,
            what="three TLS cluster nodes",
        )
        formed = subprocess.run(
            [*cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert formed.returncode == 0, formed.stdout[-800:] + formed.stderr[-800:]
        wait_until(
            lambda: (
                "cluster_state:ok"
                in subprocess.run(
                    [*cli, "-p", str(ports[0]), "CLUSTER", "INFO"], capture_output=True, text=True
                ).stdout
            ),
            timeout=30,
            what="cluster_state:ok",
        )
        url = f"rediss+cluster://slotguard:{password}@127.0.0.1:{ports[0]}"
        checks = _invalidated_and_checked(url, ca_file, password, wait_replicas=0)
        assert len(_named(checks, "primary ")) == 3
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def test_a_primary_behind_tls_sentinels_with_an_acl_user_is_invalidated_and_checked(tmp_path: Path) -> None:
    """rediss+sentinel:// with a user and password: a TLS-only primary, replica and Sentinel (a throw-away
    CA), the default user off; the worker's client and doctor both reach the Sentinel over TLS."""
    import subprocess

    from slotguard.dev.parts import free_port

    password = "tls-Sentinel-Secret"
    ca_file, cert_file, key_file = loopback_certificate(tmp_path)
    tls = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
           "--tls-auth-clients", "no", "--tls-replication", "yes"]  # fmt: skip
    primary, replica, sentinel = (free_port() for _ in range(3))
    procs = []

    def start(name: str, argv: list[str]) -> None:
        data = tmp_path / name
        data.mkdir(exist_ok=True)
        procs.append(
            subprocess.Popen(argv, cwd=data, stdout=(data / "log").open("ab"), stderr=subprocess.STDOUT)
        )

    for name, port, extra in (
        ("primary", primary, []),
        ("replica", replica, ["--replicaof", "127.0.0.1", str(primary), "--masteruser", "slotguard",
                              "--masterauth", password]),
    ):  # fmt: skip
        start(name, ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", *tls,
                     "--dir", str(tmp_path / name), "--save", "", "--appendonly", "no", "--user", "default", "off",
                     "--user", "slotguard", "on", f">{password}", "~*", "&*", "+@all", *extra])  # fmt: skip
    (tmp_path / "sentinel").mkdir()
    config = tmp_path / "sentinel" / "sentinel.conf"
    config.write_text(
        f"port 0\ntls-port {sentinel}\nbind 127.0.0.1\ndir {tmp_path / 'sentinel'}\n"
        f"tls-cert-file {cert_file}\ntls-key-file {key_file}\ntls-ca-cert-file {ca_file}\n"
        "tls-auth-clients no\ntls-replication yes\n"
        f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 1\n"
        f"sentinel auth-user {SENTINEL_MASTER} slotguard\nsentinel auth-pass {SENTINEL_MASTER} {password}\n",
        encoding="utf-8",
    )
    start("sentinel", ["redis-server", str(config), "--sentinel"])
    tls_client = {"ssl": True, "ssl_ca_certs": str(ca_file), "socket_timeout": 2}
    watcher = redis.Redis(port=sentinel, **tls_client)  # type: ignore[arg-type]
    data = redis.Redis(port=primary, username="slotguard", password=password, **tls_client)  # type: ignore[arg-type]

    def replica_ready() -> bool:
        try:
            replicas = watcher.sentinel_slaves(SENTINEL_MASTER)
            synced = data.info("replication").get("slave0")
        except (redis.RedisError, OSError):
            return False
        # WAIT 1 needs the replica synced (online), not only connected; the Sentinel learns of it from the
        # primary's INFO (every 10 s).
        return (
            isinstance(synced, dict)
            and synced.get("state") == "online"
            and any("s_down" not in str(r.get("flags", "")) for r in replicas)
        )

    try:
        wait_until(replica_ready, timeout=60, what="the replica synced and the TLS Sentinel seeing it")
        url = f"rediss+sentinel://slotguard:{password}@127.0.0.1:{sentinel}/{SENTINEL_MASTER}"
        checks = _invalidated_and_checked(url, ca_file, password, wait_replicas=1)
        assert [c.status for c in _named(checks, "sentinel replicas")] == ["ok"]
    finally:
        watcher.close()
        data.close()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
