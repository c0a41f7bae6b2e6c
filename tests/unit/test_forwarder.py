"""The relay's compiled forwarder falls back to the Python loop, saying why in one line, where it cannot be
compiled."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import forwarder


def test_without_a_compiler_the_relay_forwards_from_python_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="connectors.forwarder")
    assert forwarder.load(tmp_path / "state", tmp_path / "a-jre") is None
    [record] = caplog.records
    assert record.getMessage() == (
        f"relay: forwarding records from Python (no compiler at {tmp_path / 'a-jre' / 'bin' / 'javac'}: "
        "this Java runtime is not a JDK)"
    )
