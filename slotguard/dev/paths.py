"""Where the local stack keeps its state: everything under ``<data_dir>/dev/`` plus ``<data_dir>/dev.env``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackPaths:
    """File layout of one local stack, rooted at ``base`` (``Settings.data_dir``, default ``.slotguard``)."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "dev"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def state_file(self) -> Path:
        """Ports chosen by the first ``dev up``; reused by later calls so URLs stay stable."""
        return self.root / "stack.json"

    @property
    def env_file(self) -> Path:
        return self.base / "dev.env"

    def data(self, part: str) -> Path:
        return self.root / "data" / part

    def log(self, part: str) -> Path:
        return self.logs / f"{part}.log"

    def pid(self, part: str) -> Path:
        return self.pids / f"{part}.pid"

    def ensure(self) -> None:
        for directory in (self.root, self.logs, self.pids, self.root / "data"):
            directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def at(cls, base: Path) -> StackPaths:
        return cls(base.expanduser().resolve())
