"""A background server slotguard started: argv, log file, pid file; start, verify, stop.

The pid file records the pid *and* the process's start time and name, so a stale file whose pid was reused
by an unrelated process is recognised and that process is never signalled. The start time compared is
counted from boot (:func:`started_after_boot`), not the wall-clock ``create_time``, which moves with the
machine's clock. Servers run in their own session (process group), so ``dev up`` can exit while they keep
running, and ``dev down`` can kill stragglers of the group after the leader is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import BaseModel, ValidationError

from slotguard.dev.errors import ServerStartError

#: Popen handles of servers this Python process started, so stopping them also reaps them (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
#: exit status of those children once reaped, for error messages
_EXITED: dict[int, int] = {}


class PidRecord(BaseModel):
    """Contents of a pid file."""

    pid: int
    #: Wall clock, for a human reading the file.
    create_time: float
    name: str
    argv: list[str]
    #: Seconds from boot to the start (:func:`started_after_boot`); None in files of earlier versions.
    started_after_boot: float | None = None

    @classmethod
    def of(cls, pid: int, argv: list[str]) -> PidRecord:
        """The record of the running process ``pid`` (raises psutil's errors when it is gone)."""
        proc = psutil.Process(pid)
        return cls(
            pid=pid,
            create_time=proc.create_time(),
            name=proc.name(),
            argv=argv,
            started_after_boot=started_after_boot(pid),
        )


def started_after_boot(pid: int) -> float:
    """Seconds from the machine's boot to the start of process ``pid``.

    psutil's ``create_time`` is this plus the boot time in ``/proc/stat``, which is whole seconds of wall
    clock minus uptime: every adjustment of the wall clock moves it, and every ``create_time`` with it (4 s
    within the first 40 minutes after a boot on the dev machine; what adjusted the clock was not found). A
    server's recorded start then no longer matched its own past the 1 s tolerance: ``dev up`` took a live
    broker for a dead one and started a second on a new port (CI at 09a302b left the first running), and
    ``dev down`` would have left it running. Read between two equal boot times, so both terms come from the
    same one.
    """
    while True:
        boot = psutil.boot_time()
        started: float = psutil.Process(pid).create_time() - boot  # a fresh Process caches nothing yet
        if psutil.boot_time() == boot:
            return started


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account a server runs as (Postgres refuses to run as root)."""

    user: str
    uid: int
    gid: int


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One server process of the local stack."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_file: Path,
        pid_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self.pid_file = pid_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_as = run_as

    # --- state -------------------------------------------------------------------------------------
    def record(self) -> PidRecord | None:
        try:
            return PidRecord.model_validate_json(self.pid_file.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def running(self) -> psutil.Process | None:
        """The live process this pid file names, if it is the one we started (same start time and name)."""
        record = self.record()
        if record is None:
            return None
        try:
            proc = psutil.Process(record.pid)
            if record.started_after_boot is None:  # a pid file of an earlier version
                moved = abs(proc.create_time() - record.create_time)
            else:
                moved = abs(started_after_boot(record.pid) - record.started_after_boot)
            if moved > 1.0 or proc.name() != record.name:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                self._reap(record.pid)
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return proc

    def alive(self) -> bool:
        return self.running() is not None

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_file, lines)

    # --- start / stop ------------------------------------------------------------------------------
    def start(self) -> PidRecord:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"--- slotguard: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    user=self.run_as.uid if self.run_as else None,
                    group=self.run_as.gid if self.run_as else None,
                    extra_groups=[] if self.run_as else None,
                )
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {self.argv[0]}: {exc.strerror}") from None
        _CHILDREN[popen.pid] = popen
        try:
            record = PidRecord.of(popen.pid, self.argv)
        except psutil.NoSuchProcess:
            popen.wait()
            raise ServerStartError(
                f"{self.name} exited immediately (status {popen.returncode})", self.log_tail()
            ) from None
        self.pid_file.write_text(record.model_dump_json(), encoding="utf-8")
        return record

    def adopt(self, pid: int) -> bool:
        """Record ``pid`` as this server's process (it was restarted by someone else, e.g. ``pg_ctl
        restart``); False when no such process runs."""
        try:
            record = PidRecord.of(pid, self.argv)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(record.model_dump_json(), encoding="utf-8")
        return True

    def exit_status(self) -> int | None:
        """The exit status if this process started the server and it has exited, else None."""
        record = self.record()
        if record is None:
            return None
        popen = _CHILDREN.get(record.pid)
        return popen.poll() if popen is not None else _EXITED.get(record.pid)

    def stop(self, timeout: float = 10.0, graceful: Callable[[], None] | None = None) -> bool:
        """Stop the server if it is ours and running; True if something was stopped.

        ``graceful`` (e.g. ``pg_ctl stop -m fast``) replaces SIGTERM; after ``timeout`` the whole process
        group gets SIGKILL.
        """
        proc = self.running()
        if proc is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        pid = proc.pid
        try:
            if graceful is not None:
                graceful()
            else:
                proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
        if not self._wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)
        self._kill_group_leftovers(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        popen = _CHILDREN.get(pid)
        if popen is not None:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            _CHILDREN.pop(pid, None)
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            time.sleep(0.05)  # polling a foreign pid: there is no event to wait on
        return False

    @staticmethod
    def _kill_group_leftovers(pgid: int) -> None:
        # Children the server forked into its own session (pgid == leader pid) must not outlive it.
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                if os.getpgid(proc.pid) == pgid and proc.pid != os.getpid():
                    proc.kill()

    @staticmethod
    def _reap(pid: int) -> None:
        popen = _CHILDREN.pop(pid, None)
        if popen is not None:
            _EXITED[pid] = popen.wait()


def live_processes(pids: Mapping[str, int]) -> dict[str, psutil.Process]:
    """The processes of ``pids`` (name -> pid) that exist now, by name."""
    procs: dict[str, psutil.Process] = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            procs[name] = psutil.Process(pid)
    return procs


class RssPeaks:
    """Peak resident memory (MiB) of the stack's processes, sampled once a second during a mode."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._procs = live_processes(pids)
        self.peaks: dict[str, float] = {}

    def sample(self) -> None:
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss / 2**20
                self.peaks[name] = round(max(self.peaks.get(name, 0.0), rss), 1)
