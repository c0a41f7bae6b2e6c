"""Event-type resolution for the worker: which Cal.com event type(s) a change's service / company maps to.

Three layers, consulted in this order by :class:`LayeredResolver` (the synchronous
:class:`~processor.core.resolver.EventTypeResolver` the pure core calls):

1. the services feed (:mod:`processor.worker.services_feed`): every row of the ``services`` CDC topic in an
   :class:`~processor.core.resolver.InMemoryResolver`;
2. :class:`PostgresLookup`: a read-only lookup for what the feed has not seen, cached for
   ``resolver_cache_ttl`` seconds, negative answers included;
3. nothing: the core then widens to every event type of the company, or skips (``unknown_event_type``).

The core never does I/O: before deriving a batch, :func:`prefetch` asks each read change which services
it needs, fetches what no layer knows, then the companies of rows still without an event type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Generic, TypeVar, cast

import psycopg
from psycopg import sql

from processor.core.config import CoreConfig
from processor.core.derive import companies_needed
from processor.core.read import ReadChange
from processor.core.resolver import InMemoryResolver, ServiceInfo
from processor.worker.errors import ServiceLookupFailed
from processor.worker.policy import FailurePolicy
from schemas.rows import SERVICE_FIELDS, resolve_columns

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


class LayeredResolver:
    """The core's synchronous resolver: the services feed, then cached Postgres answers (fetched by :func:`prefetch`)."""

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

    def service(self, service_id: str) -> ServiceInfo | None:
        info = self.local.service(service_id)
        if info is not None or self.lookup is None:
            return info
        return self.services_cache.get(service_id)[1]

    def event_types_of_company(self, company_id: str) -> Sequence[str] | None:
        local = self.local.event_types_of_company(company_id) or ()
        remote: tuple[str, ...] = ()
        if self.lookup is not None:
            remote = self.companies_cache.get(company_id)[1] or ()
        merged = sorted(set(local) | set(remote))
        return merged or None

    def forget(self, info: ServiceInfo) -> None:
        """Drop cached Postgres answers a service change made stale."""
        self.services_cache.discard(info.service_id)
        if info.company_id is not None:
            self.companies_cache.discard(info.company_id)

    def unknown_services(self, service_ids: Iterable[str]) -> set[str]:
        """Services neither the feed nor a live cached Postgres answer knows (empty without Postgres)."""
        if self.lookup is None:
            return set()
        return {s for s in service_ids if self.local.service(s) is None and not self.services_cache.get(s)[0]}

    def unknown_companies(self, company_ids: Iterable[str]) -> set[str]:
        """Companies whose event types Postgres has not answered recently (empty without Postgres)."""
        if self.lookup is None:
            return set()
        return {c for c in company_ids if not self.companies_cache.get(c)[0]}

    async def fetch(self, services: Iterable[str], companies: Iterable[str], policy: FailurePolicy) -> None:
        """Ask Postgres for each; a failed lookup degrades (left uncached, asked again next time)."""
        lookup = self.lookup
        if lookup is None:
            return
        for service_id in sorted(services):
            found = await policy.degrade("postgres", partial(_found, lookup.service(service_id)), _FAILED)
            if found is not _FAILED:
                self.services_cache.put(service_id, cast(ServiceInfo | None, found))
        for company_id in sorted(companies):
            types = await policy.degrade(
                "postgres", partial(_found, lookup.company_event_types(company_id)), _FAILED
            )
            if types is not _FAILED:
                self.companies_cache.put(company_id, cast(tuple[str, ...] | None, types))


async def _found(lookup: Awaitable[object]) -> object:
    return await lookup


#: Marks a lookup that failed (as opposed to one that found nothing, which is cached).
_FAILED: object = object()


async def prefetch(
    reads: Iterable[ReadChange], config: CoreConfig, resolver: LayeredResolver, policy: FailurePolicy
) -> None:
    """Make ``resolver`` know what deriving ``reads`` will ask: their services, then the companies of rows
    whose service gives no event type. Two rounds for the whole batch; the core reads nothing twice."""
    reads = list(reads)
    services = resolver.unknown_services({s for r in reads for s in r.service_ids})
    if services:
        await resolver.fetch(services, (), policy)
    if resolver.lookup is None:
        return
    companies = resolver.unknown_companies({c for r in reads for c in companies_needed(r, config, resolver)})
    if companies:
        await resolver.fetch((), companies, policy)
