"""``slotguard worker``: run the invalidation worker (Faust) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.fastpath_build import COMPILED, fast_path_build
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, default=None, help="HTTP port for /metrics and /healthz.")
    add_logging_options(parser)
    parser.set_defaults(func=run)


#: Allocations between young collections (CPython's default: 700). A batch allocates a few objects per
#: change that all die with the batch; at 700 the collector ran several times per batch and each older
#: collection walked every module object of Faust, aiokafka and pydantic (in a handler microbenchmark with
#: no I/O, freezing and a threshold of 50,000 took 19.7 → 16.2 µs per change). Not higher than this: each
#: young collection stops the event loop, and at 50,000 they took up to 94 ms (a gc.callbacks probe at
#: 2,000 changes/s) -- the worker's share of the e2e tail; at 5,000 at most 16 ms (older ones 23 ms), with
#: drains no slower (4 interleaved rounds: 48,864/s vs 47,315/s at 50,000).
GC_YOUNG_THRESHOLD = 5_000


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's reach and collect the young less often.

    Cycles are still collected (the older generations keep their defaults); only garbage that outlives
    a batch waits a little longer. Memory is bounded by the batch size either way (bench: backlog RSS)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def use_event_loop(name: str) -> None:
    """Make ``asyncio`` hand out ``name``'s loops. uvloop runs the worker's own work no faster; what it
    saves is asyncio's share of every step -- callbacks, futures of the consumer thread, socket reads --
    which py-spy put at ~10 % of a drain (docs/worker.md, fifth round)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)


def run(args: argparse.Namespace) -> int:
    overrides = logging_overrides(args)
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    settings = load_settings(**overrides)

    # Faust and friends are imported only when the worker actually runs.
    import faust

    from processor.worker.app import create_app
    from processor.worker.preflight import check_kafka
    from slotguard.logs import configure_logging
    from slotguard.wiring import core_config, worker_config

    configure_logging(settings.log_level, json=settings.log_json)
    config = worker_config(settings)
    check_kafka(config.kafka)  # before anything is logged: an unreachable broker is one error line
    build = fast_path_build()
    # Interpreted is correct, only slower (no C compiler at install time); stale runs old code.
    logging.getLogger("slotguard.worker").log(
        logging.INFO if build == COMPILED else logging.WARNING, "core fast path: %s", build
    )
    # Faust creates its data directory but not the parents under our data dir.
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    use_event_loop(settings.event_loop)  # before the app: Faust takes the loop the policy makes
    app = create_app(config, core_config(settings))
    # faust.Worker, not app.main(): main() would parse sys.argv as Faust's own CLI. The worker installs
    # SIGTERM/SIGINT handlers that stop the app cleanly (the consumer commits what was done).
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True)
    tune_gc()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
