"""The relay's Kafka side: Kafka's own Java producer and admin client, on the JVM Debezium already runs.

Kafka Connect writes a source record with a ``KafkaProducer`` and ``ByteArraySerializer`` to the record's
topic and partition (``null`` unless the connector set one, as Debezium does for heartbeats), with the
converted headers. :meth:`KafkaSink.send_batch` does the same with the same client library, so partition
choice (murmur2 of the key bytes), bytes and headers match what a Connect worker would produce.

Only call this after the JVM is started (:func:`connectors.jvm.start_jvm`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import jpype

from connectors.config import TOPIC_PARTITIONS
from connectors.errors import RelayDeliveryError, RelayStartError
from connectors.jvm import java_error_message

log = logging.getLogger(__name__)

#: How long topic checks at start may take before the relay gives up on Kafka.
ADMIN_TIMEOUT_S = 30

#: How long closing may wait for records still buffered (they were never acknowledged, so never committed).
CLOSE_TIMEOUT_S = 30

#: Java's ``delivery.timeout.ms`` default, explicit: a batch not acknowledged by then fails the relay.
DELIVERY_TIMEOUT_MS = 120_000


class KafkaSink:
    """Sends the engine's records to Kafka and returns only once the broker acknowledged all of them."""

    def __init__(
        self,
        bootstrap: str,
        *,
        enable_idempotence: bool,
        client_id: str,
        security: Mapping[str, str] | None = None,
    ) -> None:
        """``security``: the Java clients' ``security.protocol`` / ``ssl.*`` / ``sasl.*`` properties
        (:meth:`schemas.connections.KafkaConnection.java_properties`), for producer and admin alike."""
        self._bootstrap = bootstrap
        security = {k: v for k, v in (security or {}).items() if k != "bootstrap.servers"}
        properties = jpype.JClass("java.util.Properties")
        serializer = "org.apache.kafka.common.serialization.ByteArraySerializer"
        producer_props = properties()
        for key, value in {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": "true" if enable_idempotence else "false",
            # Without idempotence a retried request could overtake the next one: one request at a time
            # keeps each partition in the order Debezium produced (Connect does the same).
            "max.in.flight.requests.per.connection": "5" if enable_idempotence else "1",
            "delivery.timeout.ms": str(DELIVERY_TIMEOUT_MS),
            "key.serializer": serializer,
            "value.serializer": serializer,
            **security,
        }.items():
            producer_props.setProperty(key, value)
        admin_props = properties()
        for key, value in {
            "bootstrap.servers": bootstrap,
            "client.id": f"{client_id}-admin",
            **security,
        }.items():
            admin_props.setProperty(key, value)
        try:
            self._producer: Any = jpype.JClass("org.apache.kafka.clients.producer.KafkaProducer")(
                producer_props
            )
            self._admin: Any = jpype.JClass("org.apache.kafka.clients.admin.Admin").create(admin_props)
        except jpype.JException as exc:
            raise RelayStartError(
                f"cannot create Kafka clients for {bootstrap}: {java_error_message(exc)}"
            ) from None
        self._record = jpype.JClass("org.apache.kafka.clients.producer.ProducerRecord")
        self._array_list = jpype.JClass("java.util.ArrayList")
        self._header = jpype.JClass("org.apache.kafka.common.header.internals.RecordHeader")
        self._known_topics: set[str] = set()

    def ensure_topics(self, names: Iterable[str]) -> None:
        """Create the topics that do not exist yet (:data:`TOPIC_PARTITIONS`, broker-default replication)."""
        missing = sorted(set(names) - self._known_topics)
        if not missing:
            return
        new_topic = jpype.JClass("org.apache.kafka.clients.admin.NewTopic")
        optional = jpype.JClass("java.util.Optional")
        seconds = jpype.JClass("java.util.concurrent.TimeUnit").SECONDS
        try:
            existing = set(self._admin.listTopics().names().get(ADMIN_TIMEOUT_S, seconds))
            to_create = [name for name in missing if name not in existing]
            if to_create:
                topics = [
                    new_topic(name, optional.of(jpype.JInt(TOPIC_PARTITIONS)), optional.empty())
                    for name in to_create
                ]
                futures = self._admin.createTopics(topics).values()
                for name in to_create:
                    try:
                        futures.get(name).get(ADMIN_TIMEOUT_S, seconds)
                        log.info("created topic %s", name)
                    except jpype.JException as exc:
                        # Another relay (or the broker's auto-create) may have made it meanwhile.
                        if "TopicExists" not in java_error_message(exc):
                            raise
        except jpype.JException as exc:
            raise RelayStartError(
                f"cannot create topics {', '.join(missing)} on Kafka {self._bootstrap}: {java_error_message(exc)}"
            ) from None
        self._known_topics.update(missing)

    def send_batch(self, events: Any) -> Counter[str]:
        """Send every Debezium ``ChangeEvent`` of ``events``; return the count per topic once all are acked.

        Raises :class:`RelayDeliveryError` if any send failed, so the engine does not mark the batch.
        """
        batch = list(events)
        topics = [str(event.destination()) for event in batch]
        self.ensure_topics(set(topics))
        try:
            futures = [self._producer.send(self._to_record(t, e)) for t, e in zip(topics, batch, strict=True)]
            self._producer.flush()
            for future in futures:
                future.get()
        except jpype.JException as exc:
            raise RelayDeliveryError(
                f"Kafka {self._bootstrap} did not acknowledge a batch of {len(batch)} records: {java_error_message(exc)}"
            ) from None
        return Counter(topics)

    def _to_record(self, topic: str, event: Any) -> Any:
        headers = None
        for header in event.headers():
            if headers is None:
                headers = self._array_list()
            headers.add(self._header(header.getKey(), header.getValue()))
        # ProducerRecord(topic, partition, timestamp, key, value, headers): a null partition lets the
        # default partitioner hash the key, a null timestamp lets the producer stamp it -- like Connect.
        return self._record(topic, event.partition(), None, event.key(), event.value(), headers)

    def close(self) -> None:
        """Flush what is pending and close both clients."""
        timeout = jpype.JClass("java.time.Duration").ofSeconds(CLOSE_TIMEOUT_S)
        for client in (self._producer, self._admin):
            try:
                client.close(timeout)
            except jpype.JException as exc:
                log.warning("closing a Kafka client failed: %s", java_error_message(exc))
