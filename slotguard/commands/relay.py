"""``slotguard relay``: stream Postgres changes into Kafka with the embedded Debezium engine until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import load_settings

log = logging.getLogger("slotguard.relay")

#: Seconds between two freezes of the relay's Python heap (:func:`freeze_heap`).
REFREEZE_INTERVAL_S = 60.0


def freeze_heap() -> None:
    """Collect, then move every surviving Python object out of the collector's reach.

    JPype runs a full Python collection (``PyGC_Collect``) whenever Java's collector has run -- every young
    collection of the relay's heap, several a second under load -- and each holds the GIL the batch
    handler needs. Over the whole heap that was ~50-100 ms each: 136 full collections took 8.1 s of ~40 s
    at 2,000 changes/s, the Debezium -> Kafka tail. Frozen, they see only what was made since: 218 took
    0.34 s. The freeze is repeated because JPype keeps adding objects that live on (100-190 a second under
    load, among them a small native type per few dozen records); objects frozen are still freed when no longer referenced,
    only cycles among them wait for the process to end."""
    gc.collect()
    gc.freeze()


def _refreeze(stop: threading.Event) -> None:
    while not stop.wait(REFREEZE_INTERVAL_S):
        freeze_heap()


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
    # Before the JVM: a stored position the slot no longer holds is a gap Debezium would only half explain.
    from slotguard.operate.source import guard_relay_start

    guard_relay_start(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        relay.request_stop()

    stopped = threading.Event()
    log.info("starting %s", relay.describe())
    try:
        _on_stop_signals(stop)
        relay.start()
        freeze_heap()
        threading.Thread(target=_refreeze, args=(stopped,), name="refreeze", daemon=True).start()
        # Again after the JVM started: it runs with -Xrs (leaves the signals alone), but JPype may have
        # installed its own Ctrl-C handler. A stop requested during start ends supervise() at once.
        _on_stop_signals(stop)
        relay.supervise(progress_interval=args.progress_interval)
    finally:
        stopped.set()
        relay.close()
        log.info("stopped after relaying %d records", relay.stats.total)
    return 0


def _on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> None:
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
