"""Managed background processes: pid files are verified, foreign processes are never signalled."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from slotguard.dev.errors import ServerStartError
from slotguard.dev.procs import ManagedProcess, PidRecord, started_after_boot, tail

# A child that waits for a signal: there is no condition a test could poll instead.
PAUSE = [sys.executable, "-c", "import signal; signal.pause()"]
IGNORE_TERM = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); signal.pause()",
]


def _poll(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # poll interval, not a wait for the event itself


def _managed(tmp_path: Path, argv: list[str], name: str = "demo") -> ManagedProcess:
    return ManagedProcess(name, argv, log_file=tmp_path / f"{name}.log", pid_file=tmp_path / f"{name}.pid")


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process this test did not start through ManagedProcess."""
    proc = subprocess.Popen(PAUSE)
    yield proc
    proc.kill()
    proc.wait()


def test_a_started_process_is_recorded_and_stopped(tmp_path: Path) -> None:
    managed = _managed(tmp_path, PAUSE)
    record = managed.start()
    assert managed.alive()
    assert managed.record() == record
    assert managed.stop(timeout=10)
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    assert not managed.pid_file.exists()


def test_a_process_ignoring_sigterm_is_killed_after_the_deadline(tmp_path: Path) -> None:
    managed = _managed(tmp_path, IGNORE_TERM)
    managed.start()
    # Wait until the handler is installed (it prints 'ready'), else SIGTERM could kill it early.
    _poll(lambda: "ready" in managed.log_tail(), "the child to install its SIGTERM handler")
    assert managed.stop(timeout=0.5)
    assert not managed.alive()


def test_a_pid_file_naming_another_process_is_not_signalled(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    managed = _managed(tmp_path, PAUSE)
    proc = psutil.Process(stranger.pid)
    # Same pid, but a different start time: the pid was "reused" by a process we did not start.
    forged = PidRecord(
        pid=stranger.pid,
        create_time=proc.create_time() - 3600,
        name=proc.name(),
        argv=PAUSE,
        started_after_boot=started_after_boot(stranger.pid) - 3600,
    )
    managed.pid_file.write_text(forged.model_dump_json())
    assert managed.running() is None
    assert managed.stop(timeout=1) is False
    assert stranger.poll() is None, "a foreign process was signalled"


def test_a_pid_file_of_an_earlier_version_still_names_its_process(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    managed = _managed(tmp_path, PAUSE)
    proc = psutil.Process(stranger.pid)
    legacy = PidRecord(pid=stranger.pid, create_time=proc.create_time(), name=proc.name(), argv=PAUSE)
    managed.pid_file.write_text(legacy.model_dump_json(exclude={"started_after_boot"}))
    assert managed.running() is not None


def test_a_server_is_still_ours_after_the_wall_clock_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    managed = _managed(tmp_path, PAUSE)
    record = managed.start()
    try:
        # The wall clock was moved on by 4 s (as measured after a boot): /proc/stat's boot time, and so
        # every create_time, is 4 s later than when the server was recorded.
        boot = psutil.boot_time()
        monkeypatch.setattr(psutil, "boot_time", lambda: boot + 4.0)
        monkeypatch.setattr(psutil.Process, "create_time", lambda self: record.create_time + 4.0)
        assert managed.running() is not None, "a live server of ours was taken for a stranger"
    finally:
        monkeypatch.undo()
        assert managed.stop(timeout=10)


def test_a_missing_binary_is_a_start_error(tmp_path: Path) -> None:
    managed = _managed(tmp_path, [str(tmp_path / "no-such-server")])
    with pytest.raises(ServerStartError, match="cannot run"):
        managed.start()


def test_tail_returns_the_last_lines_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 2) == "line 98\nline 99"
    assert tail(tmp_path / "missing.log") == ""


def test_a_start_error_shows_its_log_tail_only_in_the_detailed_form() -> None:
    err = ServerStartError("redis exited during start", "bind: address in use")
    assert "\n" not in str(err)
    assert err.detailed().endswith("bind: address in use")
