"""``slotguard topics apply`` on the local broker: creates what is missing, reports drift, alters on request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slotguard.cli import main
from slotguard.settings import settings_to_env
from tests.integration.e2e_harness import topic_partitions
from tests.integration.worker_harness import make_topics

pytestmark = pytest.mark.integration


def test_apply_creates_missing_topics_then_reports_drift_and_alters_only_when_asked(
    dev_stack: Any,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    prefix = unique_name("t")
    settings = dev_stack.settings(
        topic_prefix=prefix, events_topic=f"{prefix}.events", dlq_topic=f"{prefix}.dlq"
    )
    for key, value in settings_to_env(settings).items():
        monkeypatch.setenv(key, value)
    bootstrap = dev_stack.kafka_bootstrap
    make_topics(bootstrap, {settings.dlq_topic: 1})  # exists already, as declared

    assert main(["topics", "apply", "--dry-run"]) == 0
    assert "would create" in capsys.readouterr().out
    assert topic_partitions(bootstrap, settings.appointments_topic) == 0  # a dry run creates nothing

    assert main(["topics", "apply"]) == 0
    out = capsys.readouterr().out
    assert f"+ {settings.appointments_topic} (appointments) created" in out
    assert topic_partitions(bootstrap, settings.appointments_topic) == 4
    assert topic_partitions(bootstrap, settings.events_topic) == 4

    more = tmp_path / "topics.yaml"
    more.write_text("topics:\n  appointments:\n    partitions: 6\n", encoding="utf-8")
    assert main(["topics", "apply", "--file", str(more)]) == 1  # drift is reported, nothing changed
    assert "partitions 4 -> 6" in capsys.readouterr().out
    assert topic_partitions(bootstrap, settings.appointments_topic) == 4
    if main(["topics", "apply", "--file", str(more), "--alter"]) == 0:
        assert topic_partitions(bootstrap, settings.appointments_topic) == 6
    else:  # the local tansu broker has no CreatePartitions API; Apache Kafka has
        err = capsys.readouterr().err.strip()
        assert "CreatePartitions" in err
        assert err.count("\n") == 0


def test_a_broken_topics_file_is_one_line(
    dev_stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("topics:\n  nonsense:\n    partitions: 2\n", encoding="utf-8")
    assert main(["topics", "apply", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown topic role 'nonsense'" in err
    assert err.count("\n") == 0
