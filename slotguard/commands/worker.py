"""``slotguard worker``: run the invalidation worker (Faust) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, default=None, help="HTTP port for /metrics and /healthz.")
    add_logging_options(parser)
    parser.set_defaults(func=run)


#: The young generation's allocation threshold (CPython's default is 700): a batch keeps a few container
#: objects per change alive until it is committed, and each young collection walked them again.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's reach (``gc.freeze``) and collect the
    young generation less often; the collector itself stays CPython's."""
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
