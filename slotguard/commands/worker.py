"""``slotguard worker``: run the invalidation worker (Faust) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web-port", type=int, default=None, help="HTTP port for /metrics and /healthz.")
    parser.add_argument("--log-level", default=None, help="Log level (default: SLOTGUARD_LOG_LEVEL).")
    parser.add_argument("--log-json", action="store_true", default=None, help="One JSON object per log line.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    if args.log_json:
        overrides["log_json"] = True
    settings = load_settings(**overrides)

    # Faust and friends are imported only when the worker actually runs.
    import faust

    from processor.worker.app import create_app
    from processor.worker.logging import configure_logging
    from processor.worker.preflight import check_kafka

    configure_logging(settings.log_level, json=settings.log_json)
    check_kafka(settings.kafka_bootstrap)
    # Faust creates its data directory but not the parents under our data dir.
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    # faust.Worker, not app.main(): main() would parse sys.argv as Faust's own CLI. The worker installs
    # SIGTERM/SIGINT handlers that stop the app cleanly (the consumer commits what was acked).
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
