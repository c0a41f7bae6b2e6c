"""The worker, killed by SIGKILL whenever it derives a record holding ``KILL-ME``: a crash no exception
handler sees (as a segfault in a C extension would be), for the crash-loop breaker's test.

Run as ``python -m tests.support.crashing_worker`` from the repository root, with the worker's settings in
the environment. The fault is injected here, in the test's process image; the worker's code has no hook.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Any

from processor.worker.dlq import Record
from processor.worker.handler import BatchHandler
from slotguard.cli import main

MARKER = b"KILL-ME"

_derive = BatchHandler._derive


async def _derive_or_die(
    self: BatchHandler, records: Sequence[Record], indices: Sequence[int], *rest: Any
) -> None:
    if any(MARKER in (records[i].value or b"") for i in indices):
        os.kill(os.getpid(), signal.SIGKILL)
    await _derive(self, records, indices, *rest)


BatchHandler._derive = _derive_or_die  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    raise SystemExit(main(["worker"]))
