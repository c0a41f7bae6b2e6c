"""The relay's compiled forwarder sends what the Python loop sends: same topics, partitions, keys, values
and headers, and the same counts per topic (a real JVM in a child process, real Kafka)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.worker_harness import read_topic

pytestmark = pytest.mark.integration

CHILD = r"""
import sys
from pathlib import Path

import jpype
import orjson

from connectors import forwarder
from connectors.jvm import start_jvm
from connectors.kafka import KafkaSink

bootstrap, state, java_topic, python_topic = sys.argv[1:5]
runtime = start_jvm(None, Path(state), heap_mb=128)
compiled = forwarder.load(Path(state), runtime.java_home)
assert compiled is not None, "this JVM could not compile the forwarder"

def data(raw):
    return None if raw is None else jpype.JArray(jpype.JByte)(raw)

@jpype.JImplements("io.debezium.engine.Header")
class Header:
    def __init__(self, key, value):
        self._key, self._value = key, value
    @jpype.JOverride
    def getKey(self):
        return self._key
    @jpype.JOverride
    def getValue(self):
        return data(self._value)

@jpype.JImplements("io.debezium.engine.ChangeEvent")
class Event:
    def __init__(self, topic, key, value, partition=None, headers=()):
        self._topic, self._key, self._value = topic, key, value
        self._partition, self._headers = partition, headers
    @jpype.JOverride
    def key(self):
        return data(self._key)
    @jpype.JOverride
    def value(self):
        return data(self._value)
    @jpype.JOverride
    def destination(self):
        return self._topic
    @jpype.JOverride
    def partition(self):
        return None if self._partition is None else jpype.JClass("java.lang.Integer")(self._partition)
    @jpype.JOverride
    def headers(self):
        listed = jpype.JClass("java.util.ArrayList")()
        for key, value in self._headers:
            listed.add(Header(key, value))
        return listed

def events(topic):
    return [
        Event(topic, b'{"id":1}', b'{"op":"c"}'),
        Event(topic, b'{"id":2}', b'{"op":"u"}', headers=[("h1", b"one"), ("h2", b"\x00\xff")]),
        Event(topic, b'{"id":1}', None),  # a tombstone
        Event(topic, None, b'{"beat":1}', partition=0),  # keyless, partition set (like a heartbeat)
        Event(topic + ".other", b'{"id":3}', b'{"op":"d"}'),
    ]

counts = {}
for name, topic, sink_forwarder in (("java", java_topic, compiled), ("python", python_topic, None)):
    sink = KafkaSink(bootstrap, enable_idempotence=False, client_id="forwarder-test", forwarder=sink_forwarder)
    try:
        counts[name] = dict(sink.send_batch(events(topic)))
    finally:
        sink.close()
print(orjson.dumps(counts).decode())
"""


def _records(bootstrap: str, topic: str, count: int) -> list[tuple[Any, ...]]:
    got = read_topic(bootstrap, topic, at_least=count)
    return sorted((r.partition, r.offset, r.key, r.value, tuple(r.headers)) for r in got)


def test_the_compiled_forwarder_sends_the_records_the_python_loop_sends(
    dev_stack: Any, unique_name: Any, tmp_path: Path
) -> None:
    java_topic, python_topic = unique_name("fwd_java"), unique_name("fwd_python")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, dev_stack.kafka_bootstrap, str(tmp_path), java_topic, python_topic],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert counts["java"] == {java_topic: 4, java_topic + ".other": 1}
    assert counts["python"] == {python_topic: 4, python_topic + ".other": 1}
    for suffix, count in (("", 4), (".other", 1)):
        java = _records(dev_stack.kafka_bootstrap, java_topic + suffix, count)
        python = _records(dev_stack.kafka_bootstrap, python_topic + suffix, count)
        assert java == python
    beats = [r for r in _records(dev_stack.kafka_bootstrap, java_topic, 4) if r[2] is None]
    assert [r[0] for r in beats] == [0]  # the event's own partition is kept
