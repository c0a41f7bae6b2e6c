"""The Faust app factory: everything the worker needs, built from :class:`~slotguard.settings.Settings`.

No module-level app and no import-time configuration: :func:`create_app` builds a fresh, fully wired app
per call, so tests (and several workers in one process) can have as many as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka

from processor.core.pipeline import CoreConfig
from processor.core.resolver import InMemoryResolver
from processor.worker.agents import BatchProcessor
from processor.worker.dlq import SourceRecord
from processor.worker.invalidator import Backoff, RedisInvalidator
from processor.worker.metrics import CONTENT_TYPE, WorkerMetrics
from processor.worker.resolution import LayeredResolver, PostgresLookup, ServicesFeed
from slotguard.settings import Settings, redact_url

log = logging.getLogger("slotguard.worker")


class _IdempotentProducer(faust_aiokafka.Producer):
    """Faust only turns producer idempotence on inside transactions; we want it for plain sends too."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _IdempotentTransport(faust_aiokafka.Transport):
    Producer = _IdempotentProducer


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; we make it a setting (Kafka's own default is 500 ms).

    A broker that holds an empty fetch for the whole wait (the local tansu broker does) adds up to that
    wait to every change's commit->delete latency.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings: Settings = cast(SlotguardApp, self.consumer.app).slotguard.settings
        # aiokafka reads this attribute when start() builds its fetcher, i.e. after this method returns.
        consumer._fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ConsumerTransport(faust_aiokafka.Transport):
    Consumer = _Consumer


class SlotguardApp(faust.App):
    """A Faust app whose producer is idempotent when ``kafka_enable_idempotence`` is set."""

    idempotent_producer: bool = False
    #: The worker's collaborators (set by :func:`create_app`), for views and tests.
    slotguard: WorkerParts

    def _new_transport(self) -> Any:
        return _ConsumerTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        if self.idempotent_producer:
            return _IdempotentTransport(self.conf.broker_producer, self)
        return super()._new_producer_transport()


@dataclass
class WorkerParts:
    """The app's collaborators, reachable from tests and views (``app.slotguard``)."""

    settings: Settings
    metrics: WorkerMetrics
    resolver: LayeredResolver
    invalidator: RedisInvalidator
    feed: ServicesFeed
    processor: BatchProcessor


class _FaustPublisher:
    """:class:`~processor.worker.agents.Publisher` over the app's Kafka producer."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        fut: Awaitable[Any] = await self._app.producer.send(
            topic, key, value, None, None, list(headers) or None
        )
        return fut


def _record(event: Any) -> SourceRecord:
    message = event.message
    headers = message.headers or ()
    if isinstance(headers, dict):
        headers = list(headers.items())
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((str(k), bytes(v or b"")) for k, v in headers),
    )


def create_app(settings: Settings) -> SlotguardApp:
    """Build the worker app: the appointments agent, the services feed, ``/metrics`` and ``/healthz``."""
    app = SlotguardApp(
        settings.consumer_group,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        # Faust writes a per-app data directory (default: <cwd>/<id>-data); keep it under our data dir.
        datadir=str(settings.data_dir / "worker" / "{conf.name}-data"),
        autodiscover=False,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        # Rebalances must not wait for an in-flight batch (it may be retrying against a dead Redis):
        # its offsets are uncommitted, so the partition's next owner simply redoes it.
        stream_wait_empty=False,
        topic_disable_leader=True,
        topic_partitions=1,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        producer_acks=-1,
    )
    app.idempotent_producer = settings.kafka_enable_idempotence

    metrics = WorkerMetrics()
    config = CoreConfig.from_settings(settings)
    lookup = (
        PostgresLookup(
            settings.database_url.get_secret_value(),
            schema=settings.db_schema,
            table=settings.services_table,
            columns=dict(settings.service_columns),
        )
        if settings.database_url is not None
        else None
    )
    resolver = LayeredResolver(InMemoryResolver(), lookup=lookup, ttl=settings.resolver_cache_ttl)
    invalidator = RedisInvalidator(
        settings.redis_url.get_secret_value(),
        backoff=Backoff(maximum=settings.redis_retry_max_backoff),
        metrics=metrics,
    )
    feed = ServicesFeed(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.services_topic,
        config=config,
        resolver=resolver,
        metrics=metrics,
    )
    processor = BatchProcessor(
        config=config,
        resolver=resolver,
        invalidator=invalidator,
        publisher=_FaustPublisher(app),
        metrics=metrics,
        events_topic=settings.events_topic,
        dlq_topic=settings.dlq_topic,
    )
    parts = WorkerParts(settings, metrics, resolver, invalidator, feed, processor)
    app.slotguard = parts

    appointments = app.topic(
        settings.appointments_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,  # tombstones (null values) follow deletes; the core ignores them
    )
    outputs = [
        app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in (settings.events_topic, settings.dlq_topic)
    ]

    async def declare_outputs() -> None:
        for topic in outputs:
            await topic.maybe_declare()

    async def follow_services() -> None:
        await feed.run()

    async def appointments_agent(stream: Any) -> None:
        # Services first, so the first appointments are not all resolved through Postgres.
        await feed.ready.wait()
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_timeout):
            await processor.handle([_record(event) for event in events])
            # Only now -- Redis and Kafka acknowledged everything the batch owed -- may offsets advance.
            for event in events:
                await stream.ack(event)

    async def metrics_view(web: Any, request: Any) -> Any:
        metrics.assigned_partitions.set(_assigned(app, settings.appointments_topic))
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0] + "; version=0.0.4")

    async def healthz_view(web: Any, request: Any) -> Any:
        consumer_running = bool(app.started and not app.crashed and app.consumer.state == "running")
        redis_ok = await invalidator.ping()
        body = {
            "status": "ok" if consumer_running and redis_ok else "unavailable",
            "consumer": consumer_running,
            "redis": redis_ok,
            "assigned_partitions": _assigned(app, settings.appointments_topic),
            "services_known": len(resolver.local),
            "services_feed_ready": feed.ready.is_set(),
        }
        return web.bytes(
            orjson.dumps(body), content_type="application/json", status=200 if body["status"] == "ok" else 503
        )

    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        count = _assigned(app, settings.appointments_topic)
        metrics.assigned_partitions.set(count)
        log.info(
            "partitions assigned", extra={"assigned_partitions": count, "topic": settings.appointments_topic}
        )

    app.task(declare_outputs)
    app.task(follow_services)
    app.agent(appointments, name="slotguard.appointments")(appointments_agent)
    app.page("/metrics")(metrics_view)
    app.page("/healthz")(healthz_view)
    app.on_partitions_assigned.connect(on_assigned)
    log.info(
        "worker configured",
        extra={
            "group": settings.consumer_group,
            "appointments_topic": settings.appointments_topic,
            "services_topic": settings.services_topic,
            "redis": redact_url(settings.redis_url),
            "postgres_fallback": redact_url(settings.database_url) or "off",
        },
    )
    return app


def _assigned(app: faust.App, topic: str) -> int:
    try:
        return sum(1 for tp in app.consumer.assignment() if tp.topic == topic)
    except Exception:  # consumer not started yet
        return 0
