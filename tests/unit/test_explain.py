"""`slotguard explain`: one change event in, one JSON object out; one-line errors, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from slotguard.cli import main
from tests.support.changes import appointment, encode, envelope

FIXTURES = Path(__file__).with_name("fixtures")
SLOTGUARD = Path(sys.executable).with_name("slotguard")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the variables a test sets may influence it.
    import os

    for name in list(os.environ):
        if name.startswith("SLOTGUARD_"):
            monkeypatch.delenv(name)


def _explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["explain", *argv])
    captured = capsys.readouterr()
    return code, (orjson.loads(captured.out) if captured.out else {}), captured.err


def test_explain_prints_events_keys_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """A booking fixture with --event-type 7=123 prints the seed's keys and one booked event."""
    code, out, err = _explain(capsys, str(FIXTURES / "booked.json"), "--event-type", "7=123")
    assert (code, err) == (0, "")
    assert out["keys"] == [
        "cal_slots_15_1_123_2025-10-15-13_2025-10-15-14",
        "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
        "cal_slots_15_1_123_2025-10-15-15_2025-10-15-16",
    ]
    assert out["redis_keys"] == out["keys"]
    assert out["warnings"] == []
    (event,) = out["events"]
    assert event["type"] == "booked"
    assert event["event_type_id"] == "123"


def test_explain_honours_slotguard_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLOTGUARD_REDIS_KEY_PREFIX and SLOTGUARD_KEY_TIMEZONE apply as in the worker."""
    monkeypatch.setenv("SLOTGUARD_REDIS_KEY_PREFIX", "laravel_database_laravel_cache:")
    monkeypatch.setenv("SLOTGUARD_KEY_TIMEZONE", "Europe/Berlin")
    code, out, _ = _explain(capsys, str(FIXTURES / "booked.json"), "--event-type", "7=123")
    assert code == 0
    assert out["redis_keys"] == ["laravel_database_laravel_cache:" + k for k in out["keys"]]
    assert "cal_slots_15_1_123_2025-10-15-16_2025-10-15-17" in out["keys"]


def test_explain_without_event_type_falls_back_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --event-type the company's event types are unknown: no keys, a warning."""
    code, out, _ = _explain(capsys, str(FIXTURES / "booked.json"))
    assert code == 0
    assert out["keys"] == []
    assert out["warnings"]


def test_explain_company_option_feeds_the_company_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    """--company 8=15 --event-type 8=124 lets an unknown service fall back to company 15's event types."""
    code, out, _ = _explain(
        capsys, str(FIXTURES / "booked.json"), "--company", "8=15", "--event-type", "8=124"
    )
    assert code == 0
    assert len(out["keys"]) == 3
    assert all("_124_" in k for k in out["keys"])


def test_explain_reads_stdin_and_tombstones(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """'-' reads stdin; null is a tombstone with an empty result."""
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"null\n")))
    code, out, _ = _explain(capsys, "-")
    assert code == 0
    assert out == {"events": [], "keys": [], "redis_keys": [], "warnings": []}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{oops", "not JSON"),
        (b'{"op": "z"}', "op"),
        (b"", "empty input"),
        (b'{"op":"c","after":{"company_id":"1*","starts_at":"2025-10-15T14:00:00Z","id":1}}', "company_id"),
    ],
)
def test_explain_malformed_input_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    """Malformed or unsafe input: exit 2, one line on stderr naming the problem, nothing on stdout."""
    path = tmp_path / "change.json"
    path.write_bytes(content)
    code = main(["explain", str(path), "--event-type", "7=123"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("slotguard explain: error: ")
    assert message in captured.err


def test_explain_bad_event_type_option_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--event-type without '=' is rejected with a one-line error."""
    assert main(["explain", str(FIXTURES / "booked.json"), "--event-type", "7"]) == 2
    assert "SERVICE_ID=VALUE" in capsys.readouterr().err


def test_explain_missing_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unreadable FILE is a one-line error."""
    assert main(["explain", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _subprocess_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SLOTGUARD_")}


def test_explain_console_script_reads_stdin() -> None:
    """The installed .venv/bin/slotguard explains a change piped to stdin."""
    value = encode(envelope("u", before=appointment(), after=appointment(status="cancelled")))
    result = subprocess.run(
        [str(SLOTGUARD), "explain", "-", "--event-type", "7=123"],
        input=value,
        capture_output=True,
        check=False,
        timeout=60,
        env=_subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert [e["type"] for e in out["events"]] == ["cancelled"]
    assert len(out["keys"]) == 3


def test_explain_console_script_error_has_no_traceback() -> None:
    """Malformed input through the console script: non-zero exit, one stderr line, no traceback."""
    result = subprocess.run(
        [str(SLOTGUARD), "explain", "-"],
        input=b"[1,2,3]",
        capture_output=True,
        check=False,
        timeout=60,
        env=_subprocess_env(),
    )
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode().strip().count("\n") == 0
    assert b"expected an object" in result.stderr
