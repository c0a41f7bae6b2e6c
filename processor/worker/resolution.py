"""Event-type resolution backends: which Cal.com event type(s) a change's service / company maps to.

Three layers, consulted in this order by :class:`LayeredResolver` (the synchronous
:class:`~processor.core.resolver.EventTypeResolver` the pure core calls):

1. :class:`ServicesFeed` -- every row of the ``services`` CDC topic, read by a group-less Kafka consumer
   from the beginning into an :class:`~processor.core.resolver.InMemoryResolver`. Group-less on purpose:
   every worker needs *all* services, while a Faust table (or an agent in the worker's consumer group)
   would give each worker only the partitions it owns (see docs/worker.md).
2. :class:`PostgresLookup` -- a read-only psycopg (async) lookup for what the feed has not seen, cached
   for ``resolver_cache_ttl`` seconds, negative answers included.
3. Nothing: the core then widens to every event type of the company, or skips (``unknown_event_type``).

The core never does I/O: the worker runs it once against the layers, and when the resolver recorded
misses it pre-fetches them from Postgres and runs the core again (:func:`resolve_then_process`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from psycopg import sql

from processor.core.pipeline import CoreConfig, Outcome, decode_service_change, process_change
from processor.core.resolver import InMemoryResolver, ServiceInfo
from processor.worker.errors import ServiceLookupFailed
from processor.worker.metrics import WorkerMetrics
from schemas.rows import SERVICE_FIELDS, resolve_columns
from slotguard.errors import InputError

log = logging.getLogger("slotguard.worker.resolution")

V = TypeVar("V")
Clock = Callable[[], float]


class TtlCache(Generic[V]):
    """A dict whose entries expire ``ttl`` seconds after they were stored (``ttl`` 0 = never cached)."""

    def __init__(self, ttl: float, clock: Clock = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> tuple[bool, V | None]:
        """``(True, value)`` for a live entry, ``(False, None)`` otherwise."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return False, None
        return True, value

    def put(self, key: str, value: V) -> None:
        if self._ttl > 0:
            self._entries[key] = (self._clock() + self._ttl, value)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)


class PostgresLookup:
    """Read-only lookups in the services table, over one lazily (re)opened async connection."""

    def __init__(self, dsn: str, *, schema: str, table: str, columns: dict[str, str]) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        cols = resolve_columns(SERVICE_FIELDS, columns)
        ident = sql.Identifier
        target = sql.SQL("{}.{}").format(ident(schema), ident(table))
        self._service_sql = sql.SQL("SELECT {}::text, {}::text FROM {} WHERE {}::text = %s LIMIT 1").format(
            ident(cols["company_id"]), ident(cols["calcom_event_type_id"]), target, ident(cols["id"])
        )
        self._company_sql = sql.SQL(
            "SELECT DISTINCT {et}::text FROM {t} WHERE {c}::text = %s AND {et} IS NOT NULL ORDER BY 1"
        ).format(et=ident(cols["calcom_event_type_id"]), t=target, c=ident(cols["company_id"]))

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            # Read-only at the session level: this connection can never write, whatever the query.
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=5, options="-c default_transaction_read_only=on"
            )
        return self._conn

    async def _fetch(self, query: sql.Composed, param: str) -> list[tuple[object, ...]]:
        try:
            conn = await self._connection()
            cur = await conn.execute(query, (param,))
            return await cur.fetchall()
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.closed:
                self._conn = None
            raise ServiceLookupFailed(f"Postgres lookup failed: {type(exc).__name__}: {exc}") from exc

    async def service(self, service_id: str) -> ServiceInfo | None:
        rows = await self._fetch(self._service_sql, service_id)
        if not rows:
            return None
        company, event_type = rows[0]
        return ServiceInfo(
            service_id=service_id,
            company_id=None if company is None else str(company),
            event_type_id=None if event_type is None else str(event_type),
        )

    async def company_event_types(self, company_id: str) -> tuple[str, ...] | None:
        rows = await self._fetch(self._company_sql, company_id)
        return tuple(str(r[0]) for r in rows) or None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


@dataclass
class Misses:
    """What one run of the core asked for and no layer could answer yet."""

    services: set[str] = field(default_factory=set)
    companies: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.services or self.companies)


class LayeredResolver:
    """The core's synchronous resolver: the services feed, then cached Postgres answers; records misses."""

    def __init__(
        self,
        local: InMemoryResolver,
        *,
        lookup: PostgresLookup | None,
        ttl: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.local = local
        self.lookup = lookup
        self.services_cache: TtlCache[ServiceInfo | None] = TtlCache(ttl, clock)
        self.companies_cache: TtlCache[tuple[str, ...] | None] = TtlCache(ttl, clock)
        self.misses = Misses()

    def service(self, service_id: str) -> ServiceInfo | None:
        info = self.local.service(service_id)
        if info is not None or self.lookup is None:
            return info
        found, cached = self.services_cache.get(service_id)
        if not found:
            self.misses.services.add(service_id)
        return cached

    def event_types_of_company(self, company_id: str) -> Sequence[str] | None:
        local = self.local.event_types_of_company(company_id) or ()
        remote: tuple[str, ...] = ()
        if self.lookup is not None:
            found, cached = self.companies_cache.get(company_id)
            if not found:
                self.misses.companies.add(company_id)
            remote = cached or ()
        merged = sorted(set(local) | set(remote))
        return merged or None

    def forget(self, info: ServiceInfo) -> None:
        """Drop cached Postgres answers a service change made stale."""
        self.services_cache.discard(info.service_id)
        if info.company_id is not None:
            self.companies_cache.discard(info.company_id)

    async def prefetch(self, misses: Misses) -> None:
        """Ask Postgres for every miss; a failed lookup is logged and left uncached (tried again next time)."""
        if self.lookup is None:
            return
        for service_id in sorted(misses.services):
            try:
                self.services_cache.put(service_id, await self.lookup.service(service_id))
            except ServiceLookupFailed as exc:
                log.warning("service lookup failed", extra={"service_id": service_id, "error": str(exc)})
        for company_id in sorted(misses.companies):
            try:
                self.companies_cache.put(company_id, await self.lookup.company_event_types(company_id))
            except ServiceLookupFailed as exc:
                log.warning("company lookup failed", extra={"company_id": company_id, "error": str(exc)})


#: Core runs per change at most: the first may miss a service, the second its company's event types.
MAX_PASSES = 3


async def resolve_then_process(value: bytes | None, config: CoreConfig, resolver: LayeredResolver) -> Outcome:
    """Run the pure core; while it asked for something not known yet, fetch that and run it again."""
    outcome: Outcome | None = None
    for _ in range(MAX_PASSES):
        resolver.misses = Misses()
        outcome = process_change(value, config, resolver)
        misses, resolver.misses = resolver.misses, Misses()
        if not misses or resolver.lookup is None:
            return outcome
        await resolver.prefetch(misses)
    assert outcome is not None
    return outcome


class ServicesFeed:
    """Reads the whole ``services`` topic (every partition, from the start, no consumer group) into
    :attr:`resolver`'s local view and keeps following it. :attr:`ready` is set once it caught up with
    the end offsets it saw at start (or the topic does not exist yet, or ``ready_timeout`` passed)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        config: CoreConfig,
        resolver: LayeredResolver,
        metrics: WorkerMetrics,
        ready_timeout: float = 10.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._config = config
        self._resolver = resolver
        self._metrics = metrics
        self._ready_timeout = ready_timeout
        self.ready = asyncio.Event()

    def apply(self, value: bytes | None) -> None:
        """Apply one services change event to the local view (bad records are logged and skipped)."""
        try:
            change = decode_service_change(value, self._config)
        except InputError as exc:
            log.warning("unreadable services change skipped", extra={"error": str(exc)})
            return
        if change is None:
            return
        self._metrics.services_seen.inc()
        previous = self._resolver.local.service(change.service_id)
        if previous is not None:
            self._resolver.forget(previous)
        if change.info is None:
            self._resolver.local.remove(change.service_id)
        else:
            self._resolver.local.put(change.info)
            self._resolver.forget(change.info)

    async def _caught_up(self, consumer: AIOKafkaConsumer, targets: dict[TopicPartition, int]) -> bool:
        for tp, end in targets.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + self._ready_timeout
            targets: dict[TopicPartition, int] | None = None
            partitions = await _partitions(consumer, self._topic)
            if partitions:
                tps = [TopicPartition(self._topic, p) for p in partitions]
                consumer.assign(tps)
                targets = await consumer.end_offsets(tps)
            else:
                # No services topic yet: nothing to wait for; follow it once it appears.
                self.ready.set()
                consumer.subscribe([self._topic])
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self.apply(record.value)
                if not self.ready.is_set() and (
                    targets is None or await self._caught_up(consumer, targets) or time.monotonic() > deadline
                ):
                    log.info("services feed caught up", extra={"services": len(self._resolver.local)})
                    self.ready.set()
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> Iterable[int]:
    topics = await consumer.topics()
    if topic not in topics:
        return ()
    return sorted(consumer.partitions_for_topic(topic) or ())
