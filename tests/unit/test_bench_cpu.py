"""The bench's CPU meter: cores used while a part ran, per process and for the machine."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from slotguard.bench.cpu import BENCH, CpuMeter
from tests.support.waiting import wait_until


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_that_spins_counts_as_a_busy_core_and_one_that_sleeps_as_none() -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        assert sleeper.stdout is not None
        sleeper.stdout.readline()  # its interpreter's start-up is not what is measured
        meter = CpuMeter({"sleeper": sleeper.pid})
        meter.start()
        _spin(0.4)
        cores = meter.stop()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert set(cores) == {"machine_busy", "steal", "sleeper", BENCH}
    assert cores[BENCH] >= 0.5, cores  # on a loaded machine a spinning thread may get less than a core
    assert cores["sleeper"] <= 0.05, cores
    assert cores["machine_busy"] >= 0.5, cores


def test_a_child_of_a_metered_process_counts_for_its_parent() -> None:
    """Postgres' backends are children of the postmaster: they count for "postgres"."""
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'while True: pass']); time.sleep(60)"]
    )  # fmt: skip
    try:
        wait_until(lambda: psutil.Process(parent.pid).children(), timeout=30, what="the spinning child")
        meter = CpuMeter({"parent": parent.pid})
        meter.start()
        time.sleep(0.5)
        cores = meter.stop()
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    assert cores["parent"] >= 0.3, cores  # the child spun; the parent itself only slept


def test_the_bench_itself_leaves_out_the_stack_it_started() -> None:
    """The stack's parts are the bench's children: counted under their names, not again as "bench"."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter({"relay": spinner.pid})
        meter.start()
        time.sleep(0.5)
        cores = meter.stop()
    finally:
        spinner.kill()
        spinner.wait()
    assert cores["relay"] >= 0.3, cores
    assert cores[BENCH] <= 0.2, cores  # it slept


def test_stop_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        CpuMeter({}).stop()
