"""Prometheus metrics of one worker app, on a registry of its own.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` (not the process-global one), so tests
can build many apps in one process without "Duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Seconds from the database commit (``source.ts_ms``) to Redis acknowledging the UNLINK.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    1.0,
    1.25,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class WorkerMetrics:
    """Every metric the worker exports (names prefixed ``slotguard_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.changes = Counter(
            "slotguard_changes",
            "Appointment change events handled, by Debezium op and outcome (invalidated, noop, dlq).",
            ["op", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "slotguard_events", "Derived booking events published, by type.", ["type"], registry=r
        )
        self.keys_deleted = Counter(
            "slotguard_keys_deleted", "Redis keys that existed and were unlinked.", registry=r
        )
        self.keys_requested = Counter(
            "slotguard_keys_requested", "Redis keys the worker asked to unlink.", registry=r
        )
        self.batches = Counter("slotguard_batches", "Batches of changes handled.", registry=r)
        self.redis_retries = Counter(
            "slotguard_redis_retries", "Redis UNLINK attempts that failed and were retried.", registry=r
        )
        self.publish_retries = Counter(
            "slotguard_publish_retries",
            "Derived-event or dead-letter publishes Kafka did not acknowledge, retried.",
            registry=r,
        )
        self.lookup_failures = Counter(
            "slotguard_lookup_failures",
            "Postgres event-type lookups that failed (the change was derived without them).",
            registry=r,
        )
        self.second_deletes = Counter(
            "slotguard_second_deletes",
            "Keys that existed again at their second delete (stale fills the second delete removed).",
            registry=r,
        )
        self.guard_deletes = Counter(
            "slotguard_guard_deletes",
            "Cache writes the keyspace guard deleted: readers that missed before the invalidation.",
            registry=r,
        )
        self.source_gap = Gauge(
            "slotguard_source_gap",
            "1 while the source is stopped on a gap in the change stream (a lost replication slot): run "
            "`slotguard source recover`; 0 once recovered.",
            registry=r,
        )
        self.guard_active = Gauge(
            "slotguard_guard_active",
            "1 when the keyspace guard is subscribed and the server is known to publish the events.",
            registry=r,
        )
        self.redone = Counter(
            "slotguard_redone_changes",
            "Changes handled again on partition assignment by the redo window (SLOTGUARD_REDO_WINDOW).",
            registry=r,
        )
        self.commits = Counter(
            "slotguard_commits", "Offset commits of the appointments consumer.", registry=r
        )
        self.dlq = Counter(
            "slotguard_dlq",
            "Records sent to the dead-letter topic, by error class.",
            ["error_class"],
            registry=r,
        )
        self.crash_loops = Counter(
            "slotguard_crash_loop_dead_letters",
            "Records dead-lettered because the worker died on them SLOTGUARD_CRASH_LOOP_AFTER times in a row.",
            registry=r,
        )
        self.unknown_event_types = Counter(
            "slotguard_unknown_event_types",
            "Changes whose service had no resolvable event type (widened to the company or skipped).",
            registry=r,
        )
        self.warnings = Counter("slotguard_warnings", "Warnings the core reported.", registry=r)
        self.services_seen = Counter(
            "slotguard_service_changes", "Service change events applied to the local resolver.", registry=r
        )
        self.assigned_partitions = Gauge(
            "slotguard_assigned_partitions",
            "Partitions of the appointments topic assigned to this worker.",
            registry=r,
        )
        self.redis_up = Gauge("slotguard_redis_up", "1 when the last Redis call succeeded.", registry=r)
        self.commit_to_delete = Histogram(
            "slotguard_commit_to_delete_seconds",
            "Seconds from the database commit (source.ts_ms) to Redis acknowledging the UNLINK.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's registry."""
        return generate_latest(self.registry)
