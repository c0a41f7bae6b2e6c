"""``slotguard worker``: run the invalidation worker (Faust) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import threading

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, default=None, help="HTTP port for /metrics and /healthz.")
    add_logging_options(parser)
    parser.set_defaults(func=run)


#: Seconds between two collections of the young generation (automatic collection is off); the middle
#: generation is collected every :data:`GC_MIDDLE_EVERY`-th time, all of them every :data:`GC_FULL_EVERY`-th.
#: Automatic collection ran on the young generation every 5,000 net allocations of container objects (700
#: is CPython's default), and a batch keeps several per change alive until it is committed (librdkafka's
#: message, the keys list, the row images an event is made from): every collection walked them again and
#: moved them up, where the middle collections walked them once more. Almost nothing was garbage -- 30
#: objects in a 300,000-change drain --, yet the collector took 0.45-0.61 s of a ~5.5 s drain (154-157
#: collections, the longest 18-24 ms); by the clock ~10 times a drain for 0.07-0.19 s (two clock schedules
#: measured; gc.callbacks, docs/worker.md, sixth round). Not a full collection every second: what lives on
#: (the fast path's caches held ~40,000 tracked objects under a steady load of new windows until their
#: entries became tuples) is walked then, 13-125 ms a second at 2,000 changes/s -- the e2e tail; by
#: generation the young ones take 0.1-27 ms a second there, the full one 35.5 ms a minute. Cyclic garbage
#: waits at most for its generation's turn (a minute for the oldest); nothing on the hot path makes cycles
#: (dead letters keep no traceback, :mod:`processor.worker.handler`).
GC_INTERVAL_S = 1.0
GC_MIDDLE_EVERY = 10
GC_FULL_EVERY = 60


def tune_gc(stop: threading.Event, interval: float = GC_INTERVAL_S) -> threading.Thread:
    """Move everything built at start-up out of the collector's reach, turn automatic collection off and
    collect on a daemon thread every ``interval`` seconds until ``stop`` is set; the thread."""
    gc.collect()
    gc.freeze()
    gc.disable()
    thread = threading.Thread(target=_collect_every, args=(stop, interval), name="slotguard-gc", daemon=True)
    thread.start()
    return thread


def generation_due(tick: int) -> int:
    """The oldest generation to collect at the ``tick``-th interval (from 1): CPython's own ratios, by the
    clock instead of by allocation counts."""
    if tick % GC_FULL_EVERY == 0:
        return 2
    return 1 if tick % GC_MIDDLE_EVERY == 0 else 0


def _collect_every(stop: threading.Event, interval: float) -> None:
    tick = 0
    while not stop.wait(interval):
        tick += 1
        gc.collect(generation_due(tick))


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
