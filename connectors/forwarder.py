"""The relay's per-record loop in Java: one call from Python per batch instead of ~10 per record.

:meth:`connectors.kafka.KafkaSink.send_batch` turns each Debezium ``ChangeEvent`` into a ``ProducerRecord``
and sends it. Done from Python, every step is a call across JPype's bridge (the destination, the headers,
the key, the value, the record's constructor, ``send``, the future's ``get``): 56 µs of the relay's
handler thread per record at the median at 2,000 changes/s (scratch timing in ``send_batch``, batches of
41 records at the median, 344 at p99), and the loop's share of a batch grew to 59 ms at p99 under load --
time in which the next changes wait in Debezium's queue (the Debezium → Kafka stage).

This module compiles the same loop, in Java, with the runtime's ``javac`` (a JDK has it, a bare runtime may
not) into the relay's state directory once per source version, and loads it beside the Kafka client. The
compiler runs as a process of its own: compiled inside the relay's JVM (``javax.tools``) the compiler's
classes stayed in the relay's memory (RSS 337 MB under the bench's load against 245-258 MB without).
Where no compiler is at hand, or compiling fails, :func:`load` returns ``None`` and the sink keeps its
Python loop -- the same records either way (``tests/integration/test_relay_forwarder.py``).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path
from typing import Any

import jpype

from connectors.jvm import java_error_message

log = logging.getLogger(__name__)

CLASS_NAME = "slotguard.relay.Forwarder"

#: The longest the one-time compile may take before the relay forwards from Python instead.
COMPILE_TIMEOUT_S = 120

JAVA_SOURCE = """\
package slotguard.relay;

import io.debezium.engine.ChangeEvent;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;

/** What KafkaSink.send_batch does per record, without a crossing into Python per step. */
public final class Forwarder {
    private Forwarder() {}

    /**
     * Sends every event as a Connect worker would (topic and partition from the event, null timestamp: the
     * producer stamps it, headers converted); counts the records per topic into {@code counts}.
     */
    @SuppressWarnings({"rawtypes", "unchecked"})
    public static List<Future<RecordMetadata>> sendAll(
            Producer producer, List<ChangeEvent> events, Map<String, Integer> counts) {
        List<Future<RecordMetadata>> futures = new ArrayList<>(events.size());
        for (ChangeEvent event : events) {
            List<Header> headers = null;
            for (Object item : event.headers()) {
                io.debezium.engine.Header header = (io.debezium.engine.Header) item;
                if (headers == null) {
                    headers = new ArrayList<>();
                }
                headers.add(new RecordHeader(header.getKey(), (byte[]) header.getValue()));
            }
            String topic = event.destination();
            futures.add(producer.send(new ProducerRecord(
                    topic, event.partition(), null, event.key(), event.value(), headers)));
            counts.merge(topic, 1, Integer::sum);
        }
        return futures;
    }

    /** The topics the events go to. */
    @SuppressWarnings("rawtypes")
    public static java.util.Set<String> destinations(List<ChangeEvent> events) {
        java.util.Set<String> topics = new java.util.HashSet<>();
        for (ChangeEvent event : events) {
            topics.add(event.destination());
        }
        return topics;
    }

    /** Waits for every send; throws the first failure (an ExecutionException naming its cause). */
    public static void awaitAll(List<Future<RecordMetadata>> futures) throws Exception {
        for (Future<RecordMetadata> future : futures) {
            future.get();
        }
    }
}
"""


def load(state_dir: Path, java_home: Path) -> Any | None:
    """The compiled ``Forwarder`` class (compiled into ``state_dir`` with ``java_home``'s ``javac`` if not
    there yet), or ``None`` -- with one log line saying why -- when it cannot be. Needs the JVM started."""
    digest = hashlib.sha256(JAVA_SOURCE.encode()).hexdigest()[:12]
    root = state_dir / f"forwarder-{digest}"
    class_file = root / "classes" / "slotguard" / "relay" / "Forwarder.class"
    try:
        if not class_file.is_file():
            _compile(root, java_home / "bin" / "javac")
        loader = jpype.JClass("java.net.URLClassLoader").newInstance(
            [jpype.JClass("java.io.File")(str(root / "classes")).toURI().toURL()],
            jpype.JClass("org.apache.kafka.clients.producer.KafkaProducer").class_.getClassLoader(),
        )
        return jpype.JClass(loader.loadClass(CLASS_NAME))
    except (jpype.JException, OSError, subprocess.SubprocessError, _CompileError) as exc:
        message = exc.args[0] if isinstance(exc, _CompileError) else java_error_message(exc)
        log.info("relay: forwarding records from Python (%s)", message)
        return None


class _CompileError(Exception):
    pass


def _compile(root: Path, javac: Path) -> None:
    if not javac.is_file():
        raise _CompileError(f"no compiler at {javac}: this Java runtime is not a JDK")
    source = root / "src" / "slotguard" / "relay" / "Forwarder.java"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(JAVA_SOURCE, encoding="utf-8")
    classes = root / "classes.tmp"
    classes.mkdir(parents=True, exist_ok=True)
    # The relay's own class path (Debezium's and Kafka's jars), as the running JVM has it.
    classpath = str(jpype.JClass("java.lang.System").getProperty("java.class.path"))
    done = subprocess.run(
        [str(javac), "-nowarn", "-d", str(classes), "-cp", classpath, str(source)],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()
        raise _CompileError(f"compiling the forwarder failed: {first[0] if first else done.returncode}")
    classes.rename(root / "classes")  # whole or not at all: a crash mid-compile leaves only classes.tmp
