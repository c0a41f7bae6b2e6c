"""Each default lives in the settings, once: the running worker uses it, and the docs state it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from processor.worker.app import create_app
from slotguard.settings import Settings
from slotguard.wiring import core_config, worker_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: "`SLOTGUARD_X` (3)", "`SLOTGUARD_X` (1,000,000: ...)", "`SLOTGUARD_X` (default `v`)" -- a stated default.
STATED = re.compile(r"`SLOTGUARD_([A-Z0-9_]+)` \((?:default )?`?([0-9][0-9,._]*|true|false)`?[:;,)]")


def _defaults() -> Settings:
    # The defaults alone: nothing from this process's environment or a .env file.
    return Settings.model_construct()


def test_every_default_the_docs_state_is_the_settings_default() -> None:
    defaults = Settings.model_fields
    stated: list[tuple[str, str, str]] = []
    for path in DOCS:
        for name, value in STATED.findall(path.read_text(encoding="utf-8")):
            stated.append((path.name, name.lower(), value))
    assert stated, "no stated default found: the pattern no longer matches the docs"
    wrong = []
    for doc, name, value in stated:
        if name not in defaults:
            wrong.append(f"{doc}: SLOTGUARD_{name.upper()} is not a setting")
            continue
        default: Any = defaults[name].default
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        written = value.replace(",", "").replace("_", "")
        if written != expected and not (isinstance(default, float) and float(written) == default):
            wrong.append(f"{doc}: SLOTGUARD_{name.upper()} documented as {value}, the default is {default}")
    assert not wrong, "\n".join(wrong)


def test_the_running_worker_uses_the_settings_defaults() -> None:
    """The worker's components get every value from the settings (none re-declares a default of its own:
    batch size, second delete and guard window once disagreed between three places)."""
    settings = _defaults()
    parts = create_app(worker_config(settings), core_config(settings)).slotguard
    used = {
        "batch_size": parts.consumer._batch_size,
        "batch_timeout": parts.consumer._batch_timeout,
        "redo_window": parts.consumer._redo_window,
        "broker_session_timeout": parts.consumer._session_timeout_ms / 1000,
        "broker_rebalance_timeout": parts.consumer._rebalance_timeout_ms / 1000,
        "kafka_fetch_max_wait_ms": parts.consumer._fetch_max_wait_ms,
        "second_delete_after": parts.invalidator._second_delete_after,
        "guard_window": parts.invalidator.guard_window,
        "revoke_leases": parts.invalidator._revoke_leases,
        "unhealthy_after": parts.policy._unhealthy_after,
        "max_record_bytes": parts.handler._max_record_bytes,
        "crash_loop_after": parts.handler._journal.after if parts.handler._journal else None,
    }
    expected = {name: getattr(settings, name) for name in used}
    assert used == expected


@pytest.mark.parametrize("field", ["batch_size", "second_delete_after", "guard_window", "unhealthy_after"])
def test_the_worker_config_declares_no_default_of_its_own(field: str) -> None:
    from dataclasses import MISSING, fields

    from processor.worker.config import WorkerConfig

    (declared,) = [f for f in fields(WorkerConfig) if f.name == field]
    assert declared.default is MISSING
