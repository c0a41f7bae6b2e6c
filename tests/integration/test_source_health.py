"""The worker's /healthz says so when the source stalls (the relay is gone and no heartbeat arrives), and is
ok again once the relay is back -- instead of reporting ok over a pipeline that delivers nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_harness import Pipeline, PipelineDeployment
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(dev_stack: Any, tmp_path: Path) -> Iterator[Pipeline]:
    deployment = PipelineDeployment(dev_stack, tmp_path, overrides={"source_stall_after": 5.0})
    running: Pipeline | None = None
    try:
        running = deployment.start()
        yield running
    finally:
        deployment.stop(running)


def test_healthz_reports_a_stalled_source_and_recovers_when_the_relay_returns(pipeline: Pipeline) -> None:
    def health() -> tuple[int, dict[str, Any]]:
        answer = pipeline.worker.healthz()
        assert answer is not None, f"worker not answering; log:\n{pipeline.worker.log_tail()}"
        return answer

    wait_until(lambda: health()[0] == 200, timeout=60, what=lambda: f"healthz 200, now {health()}")
    pipeline.relay.stop()
    wait_until(
        lambda: health()[0] == 503 and "source" in health()[1]["failing"],
        timeout=60,
        what=lambda: f"healthz 503 naming the source, now {health()}",
    )
    pipeline.relay.start()
    pipeline.relay.wait_ready()
    wait_until(lambda: health()[0] == 200, timeout=90, what=lambda: f"healthz 200 again, now {health()}")
