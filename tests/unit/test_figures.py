"""Every table of measured figures in the README and docs/ says when, at which commit and on which machine
it was measured: a line "Measured on DATE at commit SHA on MACHINE, with `COMMAND`." right above it, or
date, commit and machine columns in every row (a history table)."""

from __future__ import annotations

import re
import subprocess
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A cell that is a measured figure: it starts with a number with a unit of time, rate, share, ratio or
#: memory ("12.0 ms", "**30,374 changes/s**", "6.0×"); descriptions start with words.
FIGURE = re.compile(r"^\**[~≈≤<]?\s?\d[\d,.]*\s?(?:ms|µs|/s|changes/s|%|×|MB)(?![\w])")
PROVENANCE = re.compile(
    r"Measured on (\d{4}-\d{2}-\d{2}) at commit ([0-9a-f]{7,40}) on (.+?), with `([^`]+)`\."
)
LOOKBACK = 8


def _tables(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(first line index, lines) of each Markdown table."""
    tables: list[tuple[int, list[str]]] = []
    start: int | None = None
    for i, line in enumerate([*lines, ""]):
        if line.startswith("|"):
            start = i if start is None else start
        elif start is not None:
            tables.append((start, lines[start:i]))
            start = None
    return tables


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _is_commit(sha: str) -> bool:
    done = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=ROOT, capture_output=True, check=False
    )
    return done.returncode == 0


def _figure_tables() -> list[tuple[Path, int, list[str], list[str]]]:
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for start, table in _tables(lines):
            if any(FIGURE.search(cell) for row in table[2:] for cell in _cells(row)):
                found.append((path, start, table, lines[max(0, start - LOOKBACK) : start]))
    return found


def test_the_docs_have_figure_tables_to_check() -> None:
    assert len(_figure_tables()) >= 3


@pytest.mark.parametrize(
    ("path", "start", "table", "before"),
    _figure_tables(),
    ids=lambda v: v.name if isinstance(v, Path) else str(v) if isinstance(v, int) else "",
)
def test_a_figure_table_says_when_where_and_at_which_commit(
    path: Path, start: int, table: list[str], before: list[str]
) -> None:
    where = f"{path.relative_to(ROOT)}:{start + 1}"
    header = [c.lower() for c in _cells(table[0])]
    if {"date", "commit", "machine"} <= set(header):
        for row in table[2:]:
            cells = dict(zip(header, _cells(row), strict=False))
            date.fromisoformat(cells["date"])
            sha = cells["commit"].strip("`")
            assert _is_commit(sha), f"{where}: {sha} is not a commit of this repository"
            assert cells["machine"], f"{where}: a row names no machine"
        return
    provenance = [m for line in before if (m := PROVENANCE.search(line))]
    assert provenance, (
        f"{where}: no 'Measured on DATE at commit SHA on MACHINE, with `COMMAND`.' above the table"
    )
    measured, sha, machine, _command = provenance[-1].groups()
    date.fromisoformat(measured)
    assert _is_commit(sha), f"{where}: {sha} is not a commit of this repository"
    assert machine.strip(), where
