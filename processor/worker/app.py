"""The Faust app factory: the worker's application, built from a :class:`~processor.worker.config.WorkerConfig`.

Faust is the application shell -- lifecycle and signals, supervision of the tasks, the web server with
``/metrics`` and ``/healthz`` -- but not the appointments consumer: Faust's own Kafka consumer and producer
are switched off (``BootStrategy(enable_kafka=False)``), and the appointments topic is consumed in batches
by :class:`~processor.worker.consumer.AppointmentsConsumer` with manual commits (docs/worker.md says why).

No module-level app and no import-time configuration: :func:`create_app` builds a fresh, fully wired app
per call, so tests (and several workers in one process) can have as many as they like.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.app.base import BootStrategy

from processor.core.config import CoreConfig
from processor.core.resolver import InMemoryResolver
from processor.worker.cluster import ClusterNodes
from processor.worker.config import WorkerConfig
from processor.worker.consumer import AppointmentsConsumer
from processor.worker.crashloop import CrashJournal
from processor.worker.errors import RedisUnavailable
from processor.worker.guard import ClusterGuard, KeyspaceGuard
from processor.worker.handler import BatchHandler
from processor.worker.invalidator import RedisInvalidator
from processor.worker.metrics import CONTENT_TYPE, WorkerMetrics
from processor.worker.policy import Backoff, FailurePolicy
from processor.worker.publisher import KafkaPublisher, declare_topics
from processor.worker.redis_connect import redis_client
from processor.worker.resolution import LayeredResolver, PostgresLookup
from processor.worker.services_feed import ServicesFeed
from processor.worker.source_watch import SourceWatch
from schemas.redact import redact_url

log = logging.getLogger("slotguard.worker")


class _NoKafka(BootStrategy):
    """Faust without its Kafka consumer and producer: web, tasks and lifecycle only."""

    enable_kafka = False
    enable_kafka_consumer = False
    enable_kafka_producer = False
    enable_web = True


class SlotguardApp(faust.App):
    BootStrategy = _NoKafka
    #: The worker's collaborators (set by :func:`create_app`), for views and tests.
    slotguard: WorkerParts


@dataclass
class WorkerParts:
    """The app's collaborators, reachable from tests and views (``app.slotguard``)."""

    config: WorkerConfig
    metrics: WorkerMetrics
    resolver: LayeredResolver
    invalidator: RedisInvalidator
    publisher: KafkaPublisher
    feed: ServicesFeed
    policy: FailurePolicy
    handler: BatchHandler
    consumer: AppointmentsConsumer


def create_app(config: WorkerConfig, core: CoreConfig) -> SlotguardApp:
    """Build the worker app: the appointments consumer, the services feed, ``/metrics`` and ``/healthz``."""
    app = SlotguardApp(
        config.consumer_group,
        broker=[f"kafka://{server}" for server in config.kafka.servers],
        store="memory://",
        # Faust writes a per-app data directory (default: <cwd>/<id>-data); keep it under our data dir.
        datadir=str(config.data_dir / "worker" / "{conf.name}-data"),
        autodiscover=False,
        topic_disable_leader=True,
        web_enabled=True,
        web_port=config.web_port,
        web_bind=config.web_host,
        web_host=config.web_host,
    )
    metrics = WorkerMetrics()
    policy = FailurePolicy(
        retries={
            "redis": metrics.redis_retries,
            "kafka": metrics.publish_retries,
            "postgres": metrics.lookup_failures,
        },
        backoffs={
            "redis": Backoff(maximum=config.redis_retry_max_backoff),
            "kafka": Backoff(maximum=config.publish_retry_max_backoff),
        },
        unhealthy_after=config.unhealthy_after,
    )
    lookup = (
        PostgresLookup(
            config.database_url.get_secret_value(),
            schema=config.db_schema,
            table=config.services_table,
            columns=dict(config.service_columns),
        )
        if config.database_url is not None
        else None
    )
    resolver = LayeredResolver(InMemoryResolver(), lookup=lookup, ttl=config.resolver_cache_ttl)
    invalidator = RedisInvalidator(
        config.redis,
        metrics=metrics,
        wait_replicas=config.redis_wait_replicas,
        wait_timeout=config.redis_wait_timeout,
        second_delete_after=config.second_delete_after,
        key_prefix=config.redis_key_prefix,
        guard_window=config.guard_window,
        revoke_leases=config.revoke_leases,
    )
    guard: KeyspaceGuard | ClusterGuard | None = None
    if config.guard_window > 0:
        # Its own connections without a read timeout: a subscription is idle between cache writes.
        subscriber = redis_client(config.redis, socket_timeout=None)
        options = {
            "prefix": config.redis_key_prefix,
            "channel": invalidator.channel,
            "window": config.guard_window,
        }
        guard = (
            ClusterGuard(ClusterNodes(subscriber, config.redis), metrics=metrics, **options)  # type: ignore[arg-type]
            if config.redis.kind == "cluster"
            else KeyspaceGuard(subscriber, metrics=metrics, **options)  # type: ignore[arg-type]
        )
    publisher = KafkaPublisher(
        config.kafka,
        enable_idempotence=config.enable_idempotence,
        client_id=f"{config.consumer_group}-publisher",
        max_record_bytes=config.max_record_bytes,
    )
    feed = ServicesFeed(
        kafka=config.kafka, topic=config.services_topic, config=core, resolver=resolver, metrics=metrics
    )
    handler = BatchHandler(
        config=core,
        resolver=resolver,
        invalidator=invalidator,
        publisher=publisher,
        policy=policy,
        metrics=metrics,
        events_topic=config.events_topic,
        dlq_topic=config.dlq_topic,
        max_record_bytes=config.max_record_bytes,
        journal=CrashJournal(
            invalidator.client,
            key_prefix=config.redis_key_prefix,
            group=config.consumer_group,
            after=config.crash_loop_after,
        ),
    )
    consumer = AppointmentsConsumer(
        kafka=config.kafka,
        group=config.consumer_group,
        topic=config.appointments_topic,
        handler=handler,
        metrics=metrics,
        batch_size=config.batch_size,
        batch_timeout=config.batch_timeout,
        session_timeout=config.session_timeout,
        rebalance_timeout=config.rebalance_timeout,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        client_id=f"{config.consumer_group}-worker",
        redo_window=config.redo_window,
    )
    app.slotguard = WorkerParts(
        config, metrics, resolver, invalidator, publisher, feed, policy, handler, consumer
    )

    watch = (
        SourceWatch(
            kafka=config.kafka,
            topic=config.heartbeat_topic,
            stall_after=config.source_stall_after,
            on_gap=lambda gap: metrics.source_gap.set(1 if gap.state == "detected" else 0),
        )
        if config.heartbeat_topic
        else None
    )

    async def follow_services() -> None:
        await feed.run()

    async def second_deletes() -> None:
        if config.second_delete_after <= 0:
            return
        tick = min(0.25, config.second_delete_after / 4)
        while True:
            try:
                watched = guard.covering_since if guard is not None else None
                found = await invalidator.second_delete_due(watched_since=watched)
            except RedisUnavailable:
                found = 0  # the schedule stays in Redis; the next tick tries again
            if found:
                metrics.second_deletes.inc(found)
            await asyncio.sleep(tick)  # a schedule has no event to wait on: poll it

    async def guard_fills() -> None:
        if guard is not None:
            await guard.run()

    async def watch_source() -> None:
        if watch is not None:
            await watch.run()

    async def consume_appointments() -> None:
        # Services first, so the first appointments are not all resolved through Postgres.
        await feed.ready.wait()
        await policy.retry(
            "kafka", lambda: declare_topics(config.kafka, [config.events_topic, config.dlq_topic])
        )
        await policy.retry("kafka", publisher.start)
        try:
            await consumer.run()
        finally:
            await publisher.stop()

    async def metrics_view(web: Any, request: Any) -> Any:
        metrics.assigned_partitions.set(len(consumer.assignment))
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0] + "; version=0.0.4")

    async def healthz_view(web: Any, request: Any) -> Any:
        redis_ok = await invalidator.ping()
        failing = policy.unhealthy()
        if watch is not None and (watch.stalled() or watch.gap_open):
            failing.append("source")
        ok = consumer.running and redis_ok and not failing and not app.crashed
        body = {
            "status": "ok" if ok else "unavailable",
            "consumer": consumer.running,
            "redis": redis_ok,
            "failing": failing,
            "assigned_partitions": len(consumer.assignment),
            "services_known": len(resolver.local),
            "services_feed_ready": feed.ready.is_set(),
        }
        if watch is not None and watch.gap is not None:
            body["source_gap"] = watch.gap.describe()
        return web.bytes(orjson.dumps(body), content_type="application/json", status=200 if ok else 503)

    app.task(follow_services)
    app.task(watch_source)
    app.task(second_deletes)
    app.task(guard_fills)
    app.task(consume_appointments)
    app.page("/metrics")(metrics_view)
    app.page("/healthz")(healthz_view)
    log.info(
        "worker configured",
        extra={
            "group": config.consumer_group,
            "appointments_topic": config.appointments_topic,
            "services_topic": config.services_topic,
            "redis": redact_url(config.redis.url),
            "postgres_fallback": redact_url(config.database_url) or "off",
        },
    )
    return app
