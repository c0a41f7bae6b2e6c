"""Which build of the fast path runs: compiled, interpreted, or compiled from an older source."""

from __future__ import annotations

import os
from pathlib import Path

from slotguard.fastpath_build import COMPILED, INTERPRETED, STALE, build_of


def _files(tmp_path: Path, source_newer: bool) -> Path:
    source = tmp_path / "fastpath.py"
    compiled = tmp_path / "fastpath.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    compiled.write_bytes(b"")
    older, newer = 1_700_000_000, 1_700_000_100
    os.utime(source, (newer, newer) if source_newer else (older, older))
    os.utime(compiled, (older, older) if source_newer else (newer, newer))
    return compiled


def test_a_module_loaded_from_its_source_is_interpreted(tmp_path: Path) -> None:
    """The .py file itself is the interpreted build."""
    assert build_of(tmp_path / "fastpath.py") == INTERPRETED


def test_a_compiled_module_built_after_its_source_is_compiled(tmp_path: Path) -> None:
    """An extension module no older than fastpath.py beside it is the compiled build."""
    assert build_of(_files(tmp_path, source_newer=False)) == COMPILED


def test_a_compiled_module_older_than_its_source_is_stale(tmp_path: Path) -> None:
    """An edit after the install leaves the compiled module running old code: said, with the fix."""
    assert build_of(_files(tmp_path, source_newer=True)) == STALE
    assert "pip install -e ." in STALE
