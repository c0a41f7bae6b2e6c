"""Which build of the core's fast path this process runs: compiled by mypyc (setup.py) or interpreted.

Both are the same source, so outcomes are equal (tests/unit/test_fastpath.py runs the differential tests on
each); only speed differs, which is why the bench and the worker's start-up line say which one ran. An
editable install puts the compiled module beside ``fastpath.py``, where it shadows the source: after an
edit the compiled module runs old code until the package is installed again (``scripts/test`` does).
"""

from __future__ import annotations

from pathlib import Path

import processor.core.fastpath

COMPILED = "compiled (mypyc)"
INTERPRETED = "interpreted"
STALE = "compiled from an older processor/core/fastpath.py: install the package again (pip install -e .)"


def build_of(module_file: str | Path) -> str:
    """:data:`COMPILED`, :data:`INTERPRETED` or :data:`STALE` for the module loaded from ``module_file``."""
    loaded = Path(module_file)
    if loaded.suffix == ".py":
        return INTERPRETED
    source = loaded.with_name("fastpath.py")
    if source.exists() and source.stat().st_mtime > loaded.stat().st_mtime:
        return STALE
    return COMPILED


def fast_path_build() -> str:
    """The build of the fast path this process imported."""
    return build_of(processor.core.fastpath.__file__)
