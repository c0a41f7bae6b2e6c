"""The local stack as a whole: which parts exist, their ports, ``up``/``down``/``status``, and ``dev.env``.

State lives under ``<base>/dev/`` (data, logs, pid files, ``stack.json`` with the chosen ports) and the
variables clients need go to ``<base>/dev.env``. ``up`` is idempotent and ``down`` stops only processes whose
pid files this stack wrote (verified by start time and name, see :mod:`slotguard.dev.procs`).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from slotguard.dev.errors import DevStackError
from slotguard.dev.kafka import BROKER_SETTINGS, KafkaPart
from slotguard.dev.parts import Part, free_port, port_is_free
from slotguard.dev.paths import StackPaths
from slotguard.dev.postgres import PostgresPart
from slotguard.dev.redis import PORTS_NEEDED, Topology, redis_parts, redis_url
from slotguard.dev.relay_worker import RelayPart, WorkerPart

INFRA = ("postgres", "kafka", "redis")
PIPELINE = ("relay", "worker")

#: (part name, event) with event one of "starting", "waiting", "ready", "running" (was already), "stopped"
EventSink = Callable[[str, str], None]


class StackState(BaseModel):
    """Ports chosen on the first ``up``; kept so URLs in ``dev.env`` stay the same across restarts."""

    postgres_port: int
    kafka_port: int
    redis_port: int
    web_port: int
    redis_topology: Topology = "single"
    #: The other Redis processes' ports (replica and Sentinels, or the other cluster nodes).
    redis_more_ports: list[int] = []

    @property
    def redis_ports(self) -> list[int]:
        return [self.redis_port, *self.redis_more_ports]


@dataclass(frozen=True)
class StackInfo:
    """How to reach a running stack."""

    database_url: str
    kafka_bootstrap: str
    redis_url: str
    data_dir: Path
    web_port: int

    def env(self) -> dict[str, str]:
        """The ``SLOTGUARD_*`` variables that point slotguard at this stack (the contents of dev.env)."""
        return {
            "SLOTGUARD_DATABASE_URL": self.database_url,
            "SLOTGUARD_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SLOTGUARD_REDIS_URL": self.redis_url,
            **{f"SLOTGUARD_{name.upper()}": str(value).lower() for name, value in BROKER_SETTINGS.items()},
            "SLOTGUARD_DATA_DIR": str(self.data_dir),
            "SLOTGUARD_WEB_PORT": str(self.web_port),
        }


@dataclass(frozen=True)
class PartStatus:
    name: str
    pid: int | None
    port: int | None
    url: str
    running: bool
    healthy: bool


@dataclass(frozen=True)
class UpResult:
    info: StackInfo
    started: list[str]
    already_running: list[str]
    #: why the relay/worker were not started ('' if they were, or were not asked for)


def _ignore(_part: str, _event: str) -> None:
    return None


class DevStack:
    def __init__(self, base: Path, *, slot_name: str = "slotguard", redis: Topology | None = None) -> None:
        self.paths = StackPaths.at(base)
        self.slot_name = slot_name
        #: The Redis topology ``up`` starts; None: the one this stack was started with (else one server).
        self.redis = redis

    # --- state -------------------------------------------------------------------------------------
    def _load_state(self) -> StackState | None:
        try:
            return StackState.model_validate_json(self.paths.state_file.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def _infra(self, state: StackState) -> list[Part]:
        return [
            PostgresPart(self.paths, state.postgres_port),
            KafkaPart(self.paths, state.kafka_port),
            *redis_parts(self.paths, state.redis_topology, state.redis_ports),
        ]

    def _pipeline(self, info: StackInfo) -> list[Part]:
        return [
            RelayPart(self.paths, info.env(), info.database_url, self.slot_name),
            WorkerPart(self.paths, info.env(), info.web_port),
        ]

    def _info(self, state: StackState) -> StackInfo:
        postgres, kafka, *_ = self._infra(state)
        return StackInfo(
            database_url=postgres.url,
            kafka_bootstrap=kafka.url,
            redis_url=redis_url(state.redis_topology, state.redis_ports),
            data_dir=self.paths.base,
            web_port=state.web_port,
        )

    def info(self) -> StackInfo | None:
        """How to reach the stack, if it was ever started here."""
        state = self._load_state()
        return self._info(state) if state is not None else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Two `dev up` in the same directory at once would both start servers; serialise them.
        self.paths.ensure()
        with (self.paths.root / "lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- up ----------------------------------------------------------------------------------------
    def up(self, *, infra_only: bool = False, on_event: EventSink = _ignore) -> UpResult:
        with self._locked():
            return self._up(infra_only, on_event)

    def _choose_ports(self) -> StackState:
        old = self._load_state()
        topology: Topology = self.redis or (old.redis_topology if old is not None else "single")
        if old is None:
            redis_ports = [free_port() for _ in range(PORTS_NEEDED[topology])]
            return StackState(
                postgres_port=free_port(),
                kafka_port=free_port(),
                redis_port=redis_ports[0],
                redis_more_ports=redis_ports[1:],
                redis_topology=topology,
                web_port=free_port(),
            )
        ports = old.model_dump()
        postgres, kafka, *redis_now = self._infra(old)
        for name, part in (("postgres", postgres), ("kafka", kafka)):
            # A stopped part whose port someone else took meanwhile gets a new one.
            if not part.alive() and not port_is_free(part.port):
                ports[f"{name}_port"] = free_port()
        if topology != old.redis_topology:
            if any(part.alive() for part in redis_now):
                raise DevStackError(
                    f"this stack runs Redis as {old.redis_topology}; `slotguard dev down` first to switch to {topology}"
                )
            fresh = [free_port() for _ in range(PORTS_NEEDED[topology])]
            ports.update(redis_topology=topology, redis_port=fresh[0], redis_more_ports=fresh[1:])
        else:
            taken = [not part.alive() and not port_is_free(part.port) for part in redis_now]
            if any(taken) and topology == "single":
                ports["redis_port"] = free_port()
            elif any(taken):
                # The nodes know each other by port (nodes.conf, sentinel.conf): they move together or not.
                raise DevStackError(
                    f"a port of the stack's Redis {topology} is taken by another process; free it or "
                    "`slotguard dev down` and remove the stack's directory"
                )
        if not port_is_free(old.web_port) and not WorkerPart(self.paths, {}, old.web_port).alive():
            ports["web_port"] = free_port()
        return StackState.model_validate(ports)

    def _up(self, infra_only: bool, on_event: EventSink) -> UpResult:
        state = self._choose_ports()
        self.paths.state_file.write_text(state.model_dump_json(indent=2), encoding="utf-8")
        info = self._info(state)
        started: list[Part] = []
        running: list[str] = []
        try:
            for part in self._start_all(self._infra(state), started, running, on_event):
                self._await(part, on_event)
        except BaseException:
            # Leave nothing half-started behind: stop what this call started, newest first.
            for part in reversed(started):
                part.stop()
            raise
        self.write_env(info)

        if not infra_only:
            on_event("topics", "starting")
            self._declare_topics(info)
            on_event("topics", "ready")
            pipeline_started: list[Part] = []
            try:
                # The worker reads what the relay writes: start them in order, each once healthy.
                for part in self._pipeline(info):
                    for waiting in self._start_all([part], pipeline_started, running, on_event):
                        self._await(waiting, on_event)
            except BaseException:
                # The servers stay up (they are fine and hold the data); only the pipeline is undone.
                for part in reversed(pipeline_started):
                    part.stop()
                raise
            started.extend(pipeline_started)
        return UpResult(info=info, started=[p.name for p in started], already_running=running)

    @staticmethod
    def _declare_topics(info: StackInfo) -> None:
        """Create the topics connectors/topics.yaml declares and the broker lacks, as `slotguard topics
        apply` would, before the relay makes any with its own defaults: a fresh stack shows no drift."""
        from slotguard.dev.kafka import run_sync
        from slotguard.operate.topics import apply, default_file, load_specs
        from slotguard.settings import load_settings
        from slotguard.wiring import kafka_connection

        settings = load_settings(kafka_bootstrap=info.kafka_bootstrap)
        specs = load_specs(default_file(), settings)
        run_sync(apply(kafka_connection(settings).aiokafka_options(), specs, dry_run=False, alter=False))

    @staticmethod
    def _await(part: Part, on_event: EventSink) -> None:
        on_event(part.name, "waiting")
        part.wait_ready()
        on_event(part.name, "ready")

    @staticmethod
    def _start_all(
        parts: list[Part], started: list[Part], running: list[str], on_event: EventSink
    ) -> list[Part]:
        to_wait: list[Part] = []
        for part in parts:
            if part.alive():
                running.append(part.name)
                on_event(part.name, "running")
                continue
            on_event(part.name, "starting")
            part.start()
            started.append(part)
            to_wait.append(part)
        return to_wait

    def write_env(self, info: StackInfo) -> Path:
        lines = [
            "# Written by `slotguard dev up`; source it: set -a; . ./.slotguard/dev.env; set +a",
            *(f"{key}={value}" for key, value in info.env().items()),
        ]
        self.paths.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.paths.env_file

    # --- the worker alone (the simulation's modes run it with different settings) ------------------------
    def restart_worker(self, extra_env: Mapping[str, str], on_event: EventSink = _ignore) -> None:
        """Stop the worker and start it again with ``extra_env`` on top of the stack's variables; returns
        once it is healthy (partitions assigned). The stack must be up."""
        with self._locked():
            state = self._load_state()
            if state is None:
                raise DevStackError("the local stack was never started here; run `slotguard dev up` first")
            info = self._info(state)
            WorkerPart(self.paths, info.env(), info.web_port).stop()
            part = WorkerPart(self.paths, {**info.env(), **extra_env}, info.web_port)
            on_event(part.name, "starting")
            part.start()
            self._await(part, on_event)

    def stop_relay(self) -> bool:
        """Stop the relay alone (its replication slot stays); True when one was running. ``up`` restarts it."""
        with self._locked():
            state = self._load_state()
            if state is None:
                return False
            info = self._info(state)
            return RelayPart(self.paths, info.env(), info.database_url, self.slot_name).stop()

    def stop_worker(self) -> bool:
        """Stop the worker alone; True when one was running."""
        with self._locked():
            state = self._load_state()
            if state is None:
                return False
            info = self._info(state)
            return WorkerPart(self.paths, info.env(), info.web_port).stop()

    # --- down / status -----------------------------------------------------------------------------
    def _all_parts(self) -> list[Part]:
        state = self._load_state()
        if state is None:
            return []
        return self._infra(state) + self._pipeline(self._info(state))

    def down(self, on_event: EventSink = _ignore) -> list[str]:
        """Stop every part this stack started, pipeline first; returns the names of those stopped."""
        if not self.paths.root.is_dir():
            return []
        stopped: list[str] = []
        with self._locked():
            for part in reversed(self._all_parts()):
                if part.stop():
                    stopped.append(part.name)
                    on_event(part.name, "stopped")
        return stopped

    def status(self) -> list[PartStatus]:
        result: list[PartStatus] = []
        for part in self._all_parts():
            part.alive()  # lets a part re-find its process (a postmaster restarted by pg_ctl)
            proc = part.process.running()
            result.append(
                PartStatus(
                    name=part.name,
                    pid=proc.pid if proc else None,
                    port=part.port or None,
                    url=part.url,
                    running=proc is not None,
                    healthy=proc is not None and part.healthy(),
                )
            )
        return result

    def pids(self) -> dict[str, int]:
        """Recorded pid of every part that has a pid file (for tests that check nothing is left)."""
        found: dict[str, int] = {}
        for part in self._all_parts():
            record = part.process.record()
            if record is not None:
                found[part.name] = record.pid
        return found


def wait_seconds(start: float) -> str:
    return f"{time.monotonic() - start:.1f} s"
