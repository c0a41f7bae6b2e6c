"""The README check: every slotguard command the README shows names a real subcommand, and every option it
shows is one that subcommand accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from slotguard.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    found = set(re.findall(r"`(slotguard [^`]+)`", text))
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        found.update(ln.strip() for ln in block.splitlines() if ln.strip().startswith("slotguard "))
    return sorted(found)


def _options(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """Option strings of ``parser`` and of the sub-parsers ``words`` choose."""
    options: set[str] = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    options |= _options(action.choices[word], words)
    return options


def test_the_readme_shows_the_operator_commands() -> None:
    shown = " ".join(_commands())
    for name in (
        "doctor",
        "replay",
        "topics apply",
        "connector render",
        "connector register",
        "worker",
        "demo",
    ):
        assert f"slotguard {name}" in shown


@pytest.mark.parametrize("command", _commands())
def test_a_readme_command_names_a_real_subcommand_with_real_options(command: str) -> None:
    words = command.replace("\\|", " ").replace("|", " ").replace("[", " ").replace("]", " ").split()[1:]
    assert words[0] in COMMANDS, f"{command}: no subcommand {words[0]!r}"
    known = _options(build_parser([words[0]]), words)
    shown = {w.split("=")[0] for w in words if w.startswith("--")}
    assert shown <= known, f"{command}: unknown option(s) {sorted(shown - known)}"
