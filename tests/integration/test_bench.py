"""The benchmark harness end to end on tiny inputs, so it cannot rot (no figure is asserted)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from slotguard.bench.run import run

pytestmark = pytest.mark.integration


def test_the_bench_runs_on_tiny_inputs_and_writes_results_report_and_plot(tmp_path: Path) -> None:
    lines: list[str] = []
    run(tmp_path, quick=True, progress=lines.append, sizes={"core": 300, "worker": 400, "naive": 200})
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    for key in ("events_per_s", "orjson_loads_per_s"):
        assert results["core"][key] > 0
    for key in ("events_per_s", "baseline_events_per_s", "rss_mb"):
        assert results["worker"][key] > 0
    assert "worker drain" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (tmp_path / "drain.png").stat().st_size > 0
    assert any("draining" in line for line in lines)
