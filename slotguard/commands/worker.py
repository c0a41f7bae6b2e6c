"""``slotguard worker``: run the invalidation worker (Faust) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import threading

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.fastpath_build import COMPILED, fast_path_build
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, default=None, help="HTTP port for /metrics and /healthz.")
    add_logging_options(parser)
    parser.set_defaults(func=run)


#: Seconds between two collections of the worker's cycle collector (automatic collection is off).
#: Automatic collection ran on the young generation every 5,000 net allocations of container objects (700
#: is CPython's default), and a batch keeps several per change alive until it is committed (librdkafka's
#: message, the keys list, the row images an event is made from): every collection walked them again and
#: moved them to the older generations, which walked them once more. Almost nothing was garbage -- 30
#: objects in a 300,000-change drain --, yet the collector took 0.45-0.61 s of a ~5.5 s drain (154-157
#: collections, the longest 18-24 ms). One full collection a second walks what is alive once: 9-11
#: collections, 0.10-0.19 s, the longest 25-39 ms (gc.callbacks; docs/worker.md, sixth round). The interval
#: bounds the cyclic garbage that can pile up to what the worker allocates in a second; nothing on its hot
#: path makes cycles (dead letters keep no traceback, :mod:`processor.worker.handler`).
GC_INTERVAL_S = 1.0


def tune_gc(stop: threading.Event, interval: float = GC_INTERVAL_S) -> threading.Thread:
    """Move everything built at start-up out of the collector's reach, turn automatic collection off and
    collect on a daemon thread every ``interval`` seconds until ``stop`` is set; the thread."""
    gc.collect()
    gc.freeze()
    gc.disable()
    thread = threading.Thread(target=_collect_every, args=(stop, interval), name="slotguard-gc", daemon=True)
    thread.start()
    return thread


def _collect_every(stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        gc.collect()


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
    stop_collecting = threading.Event()
    tune_gc(stop_collecting)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        stop_collecting.set()
        gc.enable()
    return 0
