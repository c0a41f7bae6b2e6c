"""The command line's own surface: every command answers ``--help``."""

from __future__ import annotations

import pytest

from slotguard.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: slotguard {command}" in capsys.readouterr().out
