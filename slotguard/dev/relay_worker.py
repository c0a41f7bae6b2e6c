"""The pipeline parts of ``dev up``: the relay (embedded Debezium) and the worker, as background processes.

Both run ``<this python> -m slotguard.cli <command>`` with the stack's ``SLOTGUARD_*`` variables in their
environment.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

import orjson
import psycopg

from slotguard.dev.parts import Part
from slotguard.dev.paths import StackPaths
from slotguard.dev.procs import ManagedProcess


class _CliPart(Part):
    """A part that is ``<this python> -m slotguard.cli <name>``, logging to the stack's log dir."""

    def __init__(self, paths: StackPaths, env: Mapping[str, str], port: int) -> None:
        super().__init__(port=port)
        self._process = ManagedProcess(
            self.name,
            # -P: never import from the working directory -- a stray schemas/ or processor/ there (our top-level
            # package names are generic) must not shadow the installed ones.
            [sys.executable, "-P", "-m", "slotguard.cli", self.name],
            log_file=paths.log(self.name),
            pid_file=paths.pid(self.name),
            env={**os.environ, **env},
            cwd=paths.root,
        )

    @property
    def process(self) -> ManagedProcess:
        return self._process


class RelayPart(_CliPart):
    """Healthy once its replication slot is active, i.e. Debezium streams."""

    name = "relay"
    start_deadline = 120.0  # JVM start plus the initial snapshot

    def __init__(self, paths: StackPaths, env: Mapping[str, str], database_url: str, slot_name: str) -> None:
        super().__init__(paths, env, port=0)
        self._database_url = database_url
        self._slot_name = slot_name

    @property
    def url(self) -> str:
        return f"slot {self._slot_name}"

    def healthy(self) -> bool:
        try:
            with psycopg.connect(self._database_url, connect_timeout=1) as conn:
                row = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self._slot_name,)
                ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])


class WorkerPart(_CliPart):
    """Healthy once ``/healthz`` answers 200 *and* reports an assigned partition.

    A 200 alone only says the consumer runs and Redis answers; until the group has assigned the worker its
    partition (on tansu that waits out the rebalance timeout) a change would sit unprocessed, so "ready"
    must mean assigned. The local stack runs a single worker, which always gets every partition.
    """

    name = "worker"
    start_deadline = 120.0  # Faust start plus the consumer-group join

    def __init__(self, paths: StackPaths, env: Mapping[str, str], web_port: int) -> None:
        super().__init__(paths, env, port=web_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as response:
                if int(response.status) != 200:
                    return False
                body = orjson.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return isinstance(body, dict) and int(body.get("assigned_partitions") or 0) > 0
