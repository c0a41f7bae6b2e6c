"""Build step: the core's fast path compiled to C by mypyc, or left interpreted.

Everything else about the package is in pyproject.toml. ``processor/core/fastpath.py`` is plain, typed
Python; compiled, the core runs its changes in ~15 % fewer instructions (callgrind, the bench mix) -- the
module is the same source either way, so a machine without a C compiler, or ``SLOTGUARD_PURE_PYTHON=1``,
installs the interpreted module and runs the same code slower. ``slotguard.bench`` reports which one ran.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup

COMPILED = ["processor/core/fastpath.py"]
# The build environment has mypy but not the runtime packages: their types are Any to mypyc, which changes
# nothing it compiles here (every value from msgspec, orjson or pydantic is handled as an object anyway).
# Not the project's [tool.mypy] either: its pydantic plugin is not installed in the build environment.
_MYPY_CONFIG = "[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"


def compiled_modules() -> list[Extension]:
    if os.environ.get("SLOTGUARD_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("slotguard: mypyc not available; the fast path stays interpreted", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        config.write_text(_MYPY_CONFIG)
        try:
            extensions = mypycify([f"--config-file={config}", *COMPILED], opt_level="3")
        except (Exception, SystemExit) as exc:  # mypyc exits on a type error
            print(f"slotguard: mypyc failed ({exc!r}); the fast path stays interpreted", file=sys.stderr)
            return []
    for extension in extensions:
        extension.optional = True  # no C compiler: installed interpreted instead of failing
    return extensions


setup(ext_modules=compiled_modules())
