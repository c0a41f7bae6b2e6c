"""`slotguard dev up/down/status` as a user runs them: a real subprocess, real servers, a private --dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import psycopg
import pytest

from slotguard.dev.stack import DevStack

pytestmark = pytest.mark.integration

SLOTGUARD = Path(sys.executable).parent / "slotguard"


def _dev(*args: str, base: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SLOTGUARD), "dev", *args, "--dir", str(base)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"slotguard dev {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def _env(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if line.startswith("SLOTGUARD_"))


def _processes_of(pids: dict[str, int]) -> list[psutil.Process]:
    """Every process of the stack: the recorded leaders and their children (Postgres backends)."""
    found: list[psutil.Process] = []
    for pid in pids.values():
        try:
            leader = psutil.Process(pid)
            found.extend([leader, *leader.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    return found


def _fresh_base() -> Path:
    # Not tmp_path: pytest keeps its temp root private (0700), and Postgres runs as another user.
    base = Path(tempfile.mkdtemp(prefix="slotguard-cli-"))
    base.chmod(0o755)  # the Postgres user must reach the data directory
    return base


def test_dev_up_then_down_twice_leaves_no_process_behind() -> None:
    base = _fresh_base()
    try:
        for round_ in (1, 2):
            up = _dev("up", "--infra-only", base=base)
            env = _env(up.stdout)
            assert set(env) >= {
                "SLOTGUARD_DATABASE_URL",
                "SLOTGUARD_KAFKA_BOOTSTRAP",
                "SLOTGUARD_REDIS_URL",
                "SLOTGUARD_KAFKA_ENABLE_IDEMPOTENCE",
                "SLOTGUARD_BROKER_REBALANCE_TIMEOUT",
                "SLOTGUARD_DATA_DIR",
                "SLOTGUARD_WEB_PORT",
            }, f"round {round_}: {up.stdout}"
            assert _env((base / "dev.env").read_text()) == env

            with psycopg.connect(env["SLOTGUARD_DATABASE_URL"]) as conn:
                row = conn.execute("SELECT count(*) FROM services").fetchone()
            assert row is not None
            assert row[0] >= 4

            again = _dev("up", "--infra-only", base=base)
            assert "postgres already running" in again.stderr
            assert _env(again.stdout) == env

            status = _dev("status", base=base)
            assert status.stdout.count("healthy") >= 3

            pids = DevStack(base).pids()
            assert set(pids) == {"postgres", "kafka", "redis"}
            processes = _processes_of(pids)
            assert len(processes) > 3, "postgres has no backend processes?"

            _dev("down", base=base)
            _gone, alive = psutil.wait_procs(processes, timeout=10)
            assert alive == [], f"round {round_}: still running after down: {alive}"
            assert DevStack(base).pids() == {}
    finally:
        _dev("down", base=base, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_dev_up_starts_the_relay_and_worker_too() -> None:
    base = _fresh_base()
    try:
        up = _dev("up", base=base)
        pids = DevStack(base).pids()
        assert set(pids) == {"postgres", "kafka", "redis", "relay", "worker"}, up.stderr
        # The topics are made as connectors/topics.yaml declares them: a fresh stack shows no drift.
        env_file = DevStack(base).paths.env_file
        stack_env = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("SLOTGUARD_")
        )
        topics = subprocess.run(
            [str(SLOTGUARD), "topics", "apply", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **stack_env},
        )
        assert topics.returncode == 0, topics.stdout + topics.stderr
        processes = _processes_of(pids)
        _dev("down", base=base)
        _gone, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == []
    finally:
        _dev("down", base=base, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_postgres_restarted_by_pg_ctl_is_still_the_stacks_and_keeps_its_port() -> None:
    """A DBA's ``pg_ctl restart``: status still sees Postgres, ``dev up`` adopts it instead of failing on
    postmaster.pid, ``dev down`` stops it; and a part stopped and started again keeps its port."""
    from slotguard.dev.postgres import PostgresPart, pg_bin_dir

    base = _fresh_base()
    try:
        env = _env(_dev("up", "--infra-only", base=base).stdout)
        stack = DevStack(base)
        state = stack._load_state()
        assert state is not None
        postgres = stack._infra(state)[0]
        assert isinstance(postgres, PostgresPart)
        before = DevStack(base).pids()["postgres"]
        postgres._run(
            # -l: the new postmaster writes to a log (in its data dir, which its user owns), not to
            # pg_ctl's captured stdout.
            [
                str(pg_bin_dir() / "pg_ctl"),
                "restart",
                "-D",
                str(postgres.data_dir),
                "-m",
                "fast",
                "-w",
                "-l",
                str(postgres.data_dir / "pg_ctl.log"),
            ],
            "pg_ctl restart",
        )
        after = postgres.postmaster_pid()
        assert after is not None
        assert after != before

        assert "postgres" in _dev("status", base=base).stdout
        assert DevStack(base).pids()["postgres"] == after
        again = _dev("up", "--infra-only", base=base)
        assert "postgres already running" in again.stderr
        assert _env(again.stdout)["SLOTGUARD_DATABASE_URL"] == env["SLOTGUARD_DATABASE_URL"]
        with psycopg.connect(env["SLOTGUARD_DATABASE_URL"]) as conn:
            conn.execute("SELECT 1")

        restarted = psutil.Process(after)
        _dev("down", base=base)
        _gone, alive = psutil.wait_procs([restarted], timeout=10)
        assert alive == [], "the postmaster pg_ctl started outlived dev down"

        # Up again after down: every port is the one it had (TIME_WAIT does not make a port "taken").
        assert _env(_dev("up", "--infra-only", base=base).stdout) == env
    finally:
        _dev("down", base=base, check=False)
        shutil.rmtree(base, ignore_errors=True)
