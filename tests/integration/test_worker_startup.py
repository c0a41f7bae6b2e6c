"""The worker refuses to start without a reachable Kafka broker, with one clear line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slotguard.dev.parts import free_port

pytestmark = pytest.mark.integration


def test_worker_without_a_reachable_broker_exits_2_with_one_error_line(tmp_path: Path) -> None:
    # A port nothing listens on: the kernel refuses the connection at once.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTGUARD_")}
    env |= {"SLOTGUARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "SLOTGUARD_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "slotguard.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("slotguard worker: error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1, done.stderr
    assert "no Kafka broker answered" in errors[0]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == errors[0], "the error is the only line on stderr"
