"""``slotguard relay``: stream Postgres changes into Kafka with the embedded Debezium engine until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from types import FrameType

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import load_settings

log = logging.getLogger("slotguard.relay")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="Log the number of records relayed this often (default: 30).",
    )
    parser.add_argument(
        "--java-log-level",
        default="WARN",
        choices=["ERROR", "WARN", "INFO", "DEBUG"],
        help="Level of Debezium's and the Kafka client's own log lines on stderr (default: WARN).",
    )
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(**logging_overrides(args))

    # The JVM and Debezium load only when the relay actually runs.
    from connectors.relay import Relay
    from slotguard.logs import configure_logging

    configure_logging(settings.log_level, json=settings.log_json)
    from slotguard.wiring import kafka_connection

    relay = Relay(settings, java_log_level=args.java_log_level, kafka=kafka_connection(settings))

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        relay.request_stop()

    log.info("starting %s", relay.describe())
    try:
        _on_stop_signals(stop)
        relay.start()
        # Again after the JVM started: it runs with -Xrs (leaves the signals alone), but JPype may have
        # installed its own Ctrl-C handler. A stop requested during start ends supervise() at once.
        _on_stop_signals(stop)
        relay.supervise(progress_interval=args.progress_interval)
    finally:
        relay.close()
        log.info("stopped after relaying %d records", relay.stats.total)
    return 0


def _on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> None:
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
