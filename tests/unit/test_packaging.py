"""Our top-level package names are generic; slotguard's own processes must not import a stray copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from slotguard.dev.relay_worker import RelayPart, WorkerPart


def _stray_schemas(root: Path) -> None:
    (root / "schemas").mkdir()
    (root / "schemas" / "__init__.py").write_text("raise ImportError('stray schemas/ imported')\n")


def test_a_stray_schemas_folder_in_the_working_directory_is_not_imported_with_minus_p(tmp_path: Path) -> None:
    _stray_schemas(tmp_path)
    command = [sys.executable, "-P", "-m", "slotguard.cli", "explain", "--help"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # The guard is what makes the difference: without -P the stray copy shadows ours.
    shadowed = subprocess.run(
        command[:1] + command[2:], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert "stray schemas/ imported" in shadowed.stderr


def test_the_stack_starts_relay_and_worker_with_minus_p() -> None:
    for part in (RelayPart, WorkerPart):
        source = Path(sys.modules[part.__module__].__file__ or "").read_text(encoding="utf-8")
        assert '[sys.executable, "-P", "-m", "slotguard.cli", self.name]' in source
