"""The composition root's factories: each component's narrow configuration, built from ``Settings``.

Only this floor knows the settings model. The core gets a :class:`~processor.core.config.CoreConfig` of
plain values, the worker a :class:`~processor.worker.config.WorkerConfig`; the connectors read the
attributes their ``ConnectorSettings``/``RelaySettings`` protocols name.
"""

from __future__ import annotations

from connectors.config import heartbeat_topic
from processor.core.config import CoreConfig
from processor.worker.config import WorkerConfig
from schemas.connections import KafkaConnection, RedisConnection
from slotguard.settings import Settings


def core_config(settings: Settings) -> CoreConfig:
    """The pure core's configuration from the settings."""
    return CoreConfig.build(
        key_template=settings.key_template,
        key_zone=settings.key_zone,
        source_zone=settings.source_zone,
        occupying_statuses=settings.occupying_statuses,
        non_occupying_statuses=settings.non_occupying_statuses,
        hours_before=settings.window_hours_before,
        hours_after=settings.window_hours_after,
        tenant_id_pattern=settings.tenant_id_pattern,
        max_tenant_id_length=settings.max_tenant_id_length,
        redis_key_prefix=settings.redis_key_prefix,
        unknown_event_type=settings.unknown_event_type,
        appointment_columns=settings.appointment_columns,
        service_columns=settings.service_columns,
        appointments_table=settings.appointments_table,
    )


def kafka_connection(settings: Settings) -> KafkaConnection:
    """How every Kafka client of this process connects (worker, feed, relay, operator commands)."""
    return KafkaConnection(
        bootstrap=settings.kafka_bootstrap,
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_username,
        password=settings.kafka_password,
        ca_file=str(settings.kafka_ca_file) if settings.kafka_ca_file else None,
        cert_file=str(settings.kafka_cert_file) if settings.kafka_cert_file else None,
        key_file=str(settings.kafka_key_file) if settings.kafka_key_file else None,
    )


def redis_connection(settings: Settings) -> RedisConnection:
    """How every Redis client of this process reaches the cache (worker, guard, flush, doctor)."""
    return RedisConnection.parse(
        settings.redis_url,
        ca_file=str(settings.redis_ca_file) if settings.redis_ca_file else None,
        sentinel_password=settings.redis_sentinel_password,
    )


def redis_wait_replicas(settings: Settings) -> int:
    """``SLOTGUARD_REDIS_WAIT_REPLICAS``, or when unset: 1 where a failover can promote a replica."""
    if settings.redis_wait_replicas is not None:
        return settings.redis_wait_replicas
    return 0 if redis_connection(settings).kind == "single" else 1


def worker_config(settings: Settings) -> WorkerConfig:
    """The worker's configuration from the settings."""
    return WorkerConfig(
        kafka=kafka_connection(settings),
        redis=redis_connection(settings),
        redis_wait_replicas=redis_wait_replicas(settings),
        redis_wait_timeout=settings.redis_wait_timeout,
        consumer_group=settings.consumer_group,
        appointments_topic=settings.appointments_topic,
        services_topic=settings.services_topic,
        events_topic=settings.events_topic,
        dlq_topic=settings.dlq_topic,
        crash_loop_after=settings.crash_loop_after,
        max_record_bytes=settings.max_record_bytes,
        database_url=settings.database_url,
        db_schema=settings.db_schema,
        services_table=settings.services_table,
        service_columns=dict(settings.service_columns),
        batch_size=settings.batch_size,
        batch_timeout=settings.batch_timeout,
        redis_retry_max_backoff=settings.redis_retry_max_backoff,
        publish_retry_max_backoff=settings.publish_retry_max_backoff,
        resolver_cache_ttl=settings.resolver_cache_ttl,
        session_timeout=settings.broker_session_timeout,
        rebalance_timeout=settings.broker_rebalance_timeout,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        enable_idempotence=settings.kafka_enable_idempotence,
        web_host=settings.web_host,
        web_port=settings.web_port,
        data_dir=settings.data_dir,
        heartbeat_topic=heartbeat_topic(settings) if settings.heartbeat_interval_ms > 0 else None,
        source_stall_after=settings.source_stall_after,
        unhealthy_after=settings.unhealthy_after,
        redo_window=settings.redo_window,
        second_delete_after=settings.second_delete_after,
        guard_window=settings.guard_window,
        revoke_leases=settings.revoke_leases,
        redis_key_prefix=settings.redis_key_prefix,
    )
