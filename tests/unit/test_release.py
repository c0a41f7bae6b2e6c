"""What a release carries: a license, a version, and the pinned versions every install uses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_license_is_mit_as_an_spdx_expression_with_its_file() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_every_dependency_is_pinned_in_the_lock_file() -> None:
    """requirements.lock (scripts/lock) pins every direct dependency of the package and its extras."""
    pinned = {
        line.split("==", 1)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith(" ")
    }
    project = PYPROJECT["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("local", "bench", "test"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    wanted.discard("slotguard")
    assert wanted - pinned == set()


def test_every_install_of_the_project_goes_through_the_lock_file() -> None:
    for path in ("scripts/test", "scripts/demo", "Dockerfile"):
        text = (ROOT / path).read_text(encoding="utf-8")
        installs = [line for line in text.splitlines() if "pip install" in line and "uv" not in line]
        project_installs = [
            line for line in installs if "-e '." in line or " . " in line or line.endswith(" .")
        ]
        assert project_installs, f"{path} installs no project"
        assert all("-c requirements.lock" in line for line in project_installs), path
