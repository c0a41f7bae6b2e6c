"""The worker's configuration: plain values, frozen, built by the composition root from the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from schemas.connections import KafkaConnection


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker process reads besides the core's own configuration."""

    kafka: KafkaConnection
    redis_url: SecretStr
    consumer_group: str
    appointments_topic: str
    services_topic: str
    events_topic: str
    dlq_topic: str
    #: Deaths on one record after which it is dead-lettered (processor/worker/crashloop.py).
    crash_loop_after: int
    #: Largest record produced; a larger dead letter is truncated (processor/worker/dlq.py).
    max_record_bytes: int
    redis_ca_file: str | None = None
    database_url: SecretStr | None = None
    db_schema: str = "public"
    services_table: str = "services"
    service_columns: Mapping[str, str] = field(default_factory=dict)
    batch_size: int = 500
    batch_timeout: float = 0.005
    redis_retry_max_backoff: float = 5.0
    publish_retry_max_backoff: float = 5.0
    resolver_cache_ttl: float = 30.0
    session_timeout: float = 30.0
    rebalance_timeout: float = 60.0
    fetch_max_wait_ms: int = 10
    enable_idempotence: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path = Path(".slotguard")
    #: Seconds a dependency may keep failing before /healthz answers 503.
    unhealthy_after: float = 30.0
    #: Seconds of history redone on every partition assignment (0: off); the safety net behind the
    #: commit rules, e.g. cache TTL + a margin.
    redo_window: float = 0.0
    #: Seconds after which every unlinked key is unlinked again (0: off); closes most stale fills.
    second_delete_after: float = 0.0
    #: Seconds the keyspace guard watches a key after its delete (0: no guard); see processor/worker/guard.py.
    guard_window: float = 0.0
    #: Revoke reader leases (processor/worker/leases.py) in the same UNLINK as the keys.
    revoke_leases: bool = True
    #: Physical Redis key prefix (the second-delete schedule lives under it, inside the cache's ACL pattern).
    redis_key_prefix: str = ""
    #: Debezium's heartbeat topic; ``None``: not watched (heartbeats off).
    heartbeat_topic: str | None = None
    #: Seconds without a heartbeat after which /healthz reports the source as stalled.
    source_stall_after: float = 60.0
