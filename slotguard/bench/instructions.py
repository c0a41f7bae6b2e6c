"""Instructions per change (valgrind's callgrind): the core and ``orjson.loads`` over the same bytes.

Changes per second on a shared machine move by a quarter within minutes and by half between days; an
instruction count does not (the same binary, inputs and environment count the same), so it is the figure to
compare the core with itself across commits. It is not time: the core's instructions ran slower than
``orjson.loads``' (at 1.62-1.63× the instructions it took 2.10-2.29× the time in two runs), so the changes/s ratio stays the
budget's measure.

One process under callgrind, collecting only inside ``collections.deque(map(fn, values), maxlen=0)`` -- the C
loop that runs each measured pass -- and dumping a part after each pass, so start-up, the workload's
generation and the warm-up pass are not counted. Needs a CPython whose symbols name ``deque_init``
(pyenv's and python.org's builds do); without it, or without valgrind, the part reports why not.
"""

from __future__ import annotations

import collections
import gc
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Passes in the order the child runs them; one callgrind part each.
PASSES = ("orjson_loads", "core")
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def passes(n: int) -> dict[str, Callable[[], None]]:
    """The measured passes over ``n`` changes of the bench's mix, each warmed up once."""
    import orjson

    from slotguard.bench.core_bench import core_pass
    from slotguard.bench.workload import changes
    from slotguard.settings import load_settings
    from slotguard.wiring import core_config

    values = [c.value for c in changes(n)]
    # As the core part: the environment's settings, the same passes.
    fns: dict[str, Callable[[bytes], object]] = {
        "orjson_loads": orjson.loads,
        "core": core_pass(core_config(load_settings())),
    }
    for fn in fns.values():
        for value in values:  # warm: caches filled, code specialised
            fn(value)

    def measured(fn: Callable[[bytes], object]) -> Callable[[], None]:
        def run() -> None:
            collections.deque(map(fn, values), maxlen=0)  # the loop in C: only it is counted

        return run

    return {name: measured(fns[name]) for name in PASSES}


def _child(n: int) -> None:
    runs = passes(n)
    gc.disable()  # a collection inside one pass would be counted there only
    for name in PASSES:
        runs[name]()


def parse_parts(files: list[Path]) -> list[int]:
    """The event totals of callgrind's numbered dump parts (``<out>.1``, ``<out>.2``, …), in dump order."""
    numbered = [p for p in files if p.name.rsplit(".", 1)[-1].isdigit()]
    totals = []
    for path in sorted(numbered, key=lambda p: int(p.name.rsplit(".", 1)[-1])):
        found = _TOTALS.search(path.read_bytes())
        totals.append(int(found.group(1)) if found else 0)
    return totals


def measure(n: int = 5_000, timeout: float = 900.0) -> dict[str, Any]:
    """Instructions per change for each pass, and the core's ratios to ``orjson.loads``; or
    ``{"not_measured": reason}``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {"not_measured": "valgrind is not installed"}
    with tempfile.TemporaryDirectory(prefix="slotguard-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=deque_init",
            "--dump-after=deque_init",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-P",
            "-m",
            "slotguard.bench.instructions",
            str(n),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"not_measured": f"callgrind did not finish in {timeout:.0f} s"}
        if done.returncode != 0:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            return {"not_measured": f"callgrind exited with {done.returncode}: {last}"}
        # Every deque made before the passes (imports, asyncio) dumped a small part too: ours are the last.
        totals = parse_parts(list(Path(tmp).glob("callgrind.out.*")))[-len(PASSES) :]
    if len(totals) != len(PASSES) or min(totals) < 1_000 * n:
        return {
            "not_measured": "callgrind counted no measured pass (a Python whose symbols do not name "
            f"deque_init?): parts {totals}"
        }
    per = {name: round(total / n) for name, total in zip(PASSES, totals, strict=True)}
    return {
        "changes": n,
        "per_change": per,
        "core_to_orjson": round(per["core"] / per["orjson_loads"], 2),
    }


if __name__ == "__main__":
    _child(int(sys.argv[1]))
