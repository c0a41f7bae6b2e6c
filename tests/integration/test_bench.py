"""The benchmark harness end to end on tiny inputs, so it cannot rot (no figure is asserted)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from slotguard.bench.drain import drain
from slotguard.bench.errors import BenchError
from slotguard.bench.run import run

pytestmark = pytest.mark.integration


def test_the_bench_runs_on_tiny_inputs_and_writes_results_report_and_plot(tmp_path: Path) -> None:
    lines: list[str] = []
    run(
        tmp_path,
        quick=True,
        progress=lines.append,
        sizes={"core": 300, "instructions": 50, "worker": 400, "naive": 200, "backlog": 300, "flush": 3000},
        e2e_seconds={20: 2.0},
        e2e_warmup=1.0,
        overhead_writes=10,
        overhead_rounds=2,
    )
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    for key in ("events_per_s", "orjson_loads_per_s"):
        assert results["core"][key] > 0
    counted = results["core"]["instructions"]
    if shutil.which("valgrind"):
        assert set(counted["per_change"]) == {"orjson_loads", "core"}, counted
        assert counted["per_change"]["core"] > 0
    else:
        assert "valgrind" in counted["not_measured"]
    for key in ("events_per_s", "baseline_events_per_s", "rss_mb"):
        assert results["worker"][key] > 0
    assert len(results["worker"]["drain_rates"]) == 3  # three fresh workers, one topic
    assert results["worker"]["scale_out"]["processes"] == 2
    assert results["worker"]["scale_out"]["events_per_s"] > 0
    assert (tmp_path / "workers2.log").exists()  # each process of the scale-out drain has its own log
    assert (tmp_path / "workers2.1.log").exists()
    e2e = results["e2e"]["20"]
    assert e2e["changes"] == 40
    assert e2e["observed"] == 40, e2e  # every change's key seen gone
    assert e2e["unobserved_still_cached"] == 0, e2e
    assert all(e2e["stages_p50_ms"][stage] is not None for stage in e2e["stages_p50_ms"]), e2e
    # The cores in use while the load ran: the machine's, and every part's of the e2e run's own stack.
    assert {"machine_busy", "steal", "bench", "postgres", "kafka", "redis", "relay", "worker"} <= set(
        e2e["cpu_cores"]
    ), e2e
    assert e2e["cpu_cores"]["machine_busy"] > 0
    assert results["backlog"]["changes"] == 300
    assert results["backlog"]["rss_mb_peak"] >= results["backlog"]["rss_mb_start"] > 0
    assert results["rss_mb"]["relay"] > 0
    assert results["rss_mb"]["worker"] > 0
    assert results["write_overhead"]["ratio"] > 0
    assert len(results["write_overhead"]["round_ratios"]) == 2
    on_cluster = results["worker"]["cluster"]
    assert on_cluster["events_per_s"] > 0
    assert len(on_cluster["drain_rates"]) == 3
    cluster_e2e = results["cluster_e2e"]["20"]
    assert cluster_e2e["observed"] == cluster_e2e["changes"] == 40, cluster_e2e
    flush = results["flush"]
    assert flush["keys"] == 3000, flush
    assert flush["e2e_during"]["observed"] == flush["e2e_during"]["changes"] > 0, flush
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for needle in (
        "worker drain",
        "e2e at 20/s",
        "cores in use during e2e at 20/s",
        "write overhead",
        "RSS under e2e load",
        "backlog of 300 changes",
        "flush of 3,000 cached keys",
        "worker drain on a Redis Cluster",
        "e2e at 20/s on the Redis Cluster",
        "instructions per change",
        "SLOTGUARD_POLL_INTERVAL_MS",
    ):
        assert needle in report
    assert (tmp_path / "drain.png").stat().st_size > 0
    assert (tmp_path / "e2e_cdf.png").stat().st_size > 0
    assert any("draining" in line for line in lines)


def test_a_drain_whose_consumer_exits_is_one_error_naming_the_exit_and_its_log(
    dev_stack: Any, tmp_path: Path, unique_name: Any
) -> None:
    settings = dev_stack.settings(consumer_group=unique_name("drain"))
    log = tmp_path / "gone.log"
    with pytest.raises(BenchError, match=rf"exited with 3 during the drain; see {log}$"):
        drain([sys.executable, "-c", "raise SystemExit(3)"], settings, total=10, log=log, timeout=60)
