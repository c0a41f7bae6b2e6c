"""The benchmark suite's errors: a part that could not run or finish -- one line, as every ``slotguard``
command reports what it raises on purpose (the figures of a part that did run are results, not errors)."""

from __future__ import annotations

from schemas.errors import SlotguardError


class BenchError(SlotguardError):
    """A part of ``slotguard bench`` could not run or finish: the output directory, a child process, a
    drain that stopped or never ended, the load generator's database connection."""
