"""The worker's configuration: plain values, frozen, built by the composition root from the settings.

No field has a default: every default lives in :mod:`slotguard.settings`, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from schemas.connections import KafkaConnection, RedisConnection


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker process reads besides the core's own configuration."""

    kafka: KafkaConnection
    redis: RedisConnection
    #: Replicas that must acknowledge a batch's deletes before its commit (WAIT; 0: none).
    redis_wait_replicas: int
    redis_wait_timeout: float
    consumer_group: str
    appointments_topic: str
    services_topic: str
    events_topic: str
    dlq_topic: str
    #: Deaths on one record after which it is dead-lettered (processor/worker/crashloop.py).
    crash_loop_after: int
    #: Largest record produced; a larger dead letter is truncated (processor/worker/dlq.py).
    max_record_bytes: int
    database_url: SecretStr | None
    db_schema: str
    services_table: str
    service_columns: Mapping[str, str]
    batch_size: int
    batch_timeout: float
    redis_retry_max_backoff: float
    publish_retry_max_backoff: float
    resolver_cache_ttl: float
    session_timeout: float
    rebalance_timeout: float
    fetch_max_wait_ms: int
    enable_idempotence: bool
    web_host: str
    web_port: int
    data_dir: Path
    #: Seconds a dependency may keep failing before /healthz answers 503.
    unhealthy_after: float
    #: Seconds of history redone on every partition assignment (0: off); the safety net behind the
    #: commit rules, e.g. cache TTL + a margin.
    redo_window: float
    #: Seconds after which every unlinked key is unlinked again (0: off); closes most stale fills.
    second_delete_after: float
    #: Seconds the keyspace guard watches a key after its delete (0: no guard); see processor/worker/guard.py.
    guard_window: float
    #: Revoke reader leases (processor/worker/leases.py) in the same UNLINK as the keys.
    revoke_leases: bool
    #: Physical Redis key prefix (the second-delete schedule lives under it, inside the cache's ACL pattern).
    redis_key_prefix: str
    #: Debezium's heartbeat topic; ``None``: not watched (heartbeats off).
    heartbeat_topic: str | None
    #: Seconds without a heartbeat after which /healthz reports the source as stalled.
    source_stall_after: float
