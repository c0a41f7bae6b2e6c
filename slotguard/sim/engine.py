"""One run of the simulated business against the real stack: readers through a read-through Redis cache,
customers booking what they were shown, movers rescheduling, cancelling, soft-deleting and clearing slots --
every write the SQL a booking source issues -- and a listener for the keys' deletions. What it sees goes to the
:class:`~slotguard.sim.checker.Checker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
import redis.asyncio as aioredis
from psycopg import errors as pg_errors

from processor.worker.leases import LeasedCache
from processor.worker.redis_connect import redis_client
from schemas.connections import RedisConnection
from slotguard.operate.kafka_group import follow_from_end
from slotguard.sim.business import (
    ADMIN_CLEAR,
    BOOKED_HOURS,
    CANCEL,
    HOUR,
    INSERT_PHONE,
    RESCHEDULE,
    SOFT_DELETE,
    UPSERT_WEBHOOK,
    Business,
    Calendar,
    Workload,
    at,
    decode,
    encode,
)
from slotguard.sim.checker import Checker


def invalidated_by(timestamp_ms: int, offset: float) -> float:
    """When an event's keys were certainly gone, on the checker's clock: its record timestamp, in whole
    milliseconds and taken after Redis acknowledged the UNLINK, rounded *up* -- a read sent in the same
    millisecond as the append may still have reached Redis before the delete, and a read called stale
    after the delete must certainly have been."""
    return (timestamp_ms + 1) / 1000 - offset


@dataclass(frozen=True)
class EventsFeed:
    """Where the worker publishes its events (aiokafka client options and the topic)."""

    options: dict[str, Any]
    topic: str


@dataclass
class Tally:
    """Running counts for the live view (the verdicts come from the checker at the end)."""

    reads: int = 0
    hits: int = 0
    bookings: int = 0
    conflicts: int = 0
    moves: int = 0
    frees: int = 0
    fills: int = 0
    fills_refused: int = 0
    invalidations: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> Tally:
        return replace(self, by_source=dict(self.by_source))

    def count(self, source: str) -> None:
        self.by_source[source] = self.by_source.get(source, 0) + 1


class Simulation:
    """Runs ``workload`` against the stack at ``database_url`` / ``redis_url``; ``leased`` readers use the
    lease protocol (``--mode lease``)."""

    def __init__(
        self,
        business: Business,
        workload: Workload,
        *,
        database_url: str,
        redis_url: str,
        leased: bool = False,
        events: EventsFeed | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.business = business
        self.workload = workload
        self.database_url = database_url
        self.redis_url = redis_url
        self.leased = leased
        self.events = events
        self.clock = clock
        self.checker = Checker()
        self.tally = Tally()
        self.active: dict[int, tuple[Calendar, int]] = {}
        self._stop = asyncio.Event()
        self._redis: aioredis.Redis | None = None
        self._cache: LeasedCache | None = None

    # --- the cache, as the booking app uses it ------------------------------------------------------
    async def look(
        self, conn: psycopg.AsyncConnection[Any], delays: random.Random, cal: Calendar, x: int
    ) -> tuple[int, ...]:
        """Free hours around ``x`` for ``cal``, through the read-through cache."""
        assert self._redis is not None
        key = self.business.key(cal, x)
        token: str | None = None
        value: bytes | None
        served = self.clock()
        if self._cache is not None:
            value, token = await self._cache.get_or_lease(key)
        else:
            value = cast("bytes | None", await self._redis.get(key))  # the client does not decode
        self.tally.reads += 1
        if value is not None:
            free = decode(value)
            self.tally.hits += 1
            self.checker.read(served, key, ((cal.index, h) for h in free))
            return free
        self.checker.missed()
        window = self.business.around(x)
        cursor = await conn.execute(
            BOOKED_HOURS, (cal.company, cal.branch, cal.service, at(x - HOUR), at(x + 2 * HOUR))
        )
        booked = {int(row[0].timestamp()) for row in await cursor.fetchall()}
        free = tuple(h for h in window if h not in booked)
        await asyncio.sleep(self.workload.fill_delay(delays))  # the simulated Cal.com API call
        written = self.clock()
        if self._cache is not None:
            assert token is not None
            landed = await self._cache.put(key, token, encode(free), self.workload.ttl_s)
        else:
            await self._redis.set(key, encode(free), ex=self.workload.ttl_s)
            landed = True
        self.checker.fill(written, key, ((cal.index, h) for h in free), landed=landed)
        self.tally.fills += landed
        self.tally.fills_refused += not landed
        return free

    # --- customers ----------------------------------------------------------------------------------
    async def book(
        self, conn: psycopg.AsyncConnection[Any], choices: random.Random, cal: Calendar, hour: int
    ) -> None:
        webhook = choices.random() < 0.5
        try:
            if webhook:
                uid = f"sim-{uuid.uuid4().hex}"
                params: tuple[object, ...] = (
                    cal.company,
                    cal.branch,
                    cal.service,
                    at(hour),
                    at(hour + HOUR),
                    uid,
                )
                cursor = await conn.execute(UPSERT_WEBHOOK, params)
            else:
                cursor = await conn.execute(
                    INSERT_PHONE, (cal.company, cal.branch, cal.service, at(hour), at(hour + HOUR))
                )
            row = await cursor.fetchone()
        except pg_errors.UniqueViolation:
            self.tally.conflicts += 1  # shown free, already taken: the symptom slotguard exists for
            return
        self.checker.booked((cal.index, hour), self.clock())
        assert row is not None
        self.active[int(row[0])] = (cal, hour)
        self.tally.bookings += 1
        self.tally.count("webhook upsert" if webhook else "phone insert")

    async def reader(self, index: int) -> None:
        choices = random.Random(f"{self.workload.seed}-reader-{index}")
        delays = random.Random(f"{self.workload.seed}-delays-{index}")
        think = self.workload.think_ms / 1000
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                await asyncio.sleep(choices.expovariate(1 / think))  # the customer's own pace
                cal = choices.choice(self.business.calendars)
                x = choices.choice(self.business.hours)
                free = await self.look(conn, delays, cal, x)
                if free and choices.random() < self.workload.book_probability:
                    await self.book(conn, choices, cal, choices.choice(free))

    # --- movers: reschedule, cancel, soft delete, admin clear -----------------------------------------
    async def mover(self, index: int) -> None:
        choices = random.Random(f"{self.workload.seed}-mover-{index}")
        delays = random.Random(f"{self.workload.seed}-mover-delays-{index}")
        think = self.workload.think_ms / 1000
        limit = self.workload.occupancy * self.business.slots
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            while not self._stop.is_set():
                await asyncio.sleep(choices.expovariate(1 / think))
                if len(self.active) <= limit:
                    continue
                booking = choices.choice(sorted(self.active))
                cal, hour = self.active.pop(booking)  # claimed: no other mover touches it
                await self.move(conn, choices, delays, booking, cal, hour)

    async def move(
        self,
        conn: psycopg.AsyncConnection[Any],
        choices: random.Random,
        delays: random.Random,
        booking: int,
        cal: Calendar,
        hour: int,
    ) -> None:
        kind = choices.choice(("reschedule", "cancel by status", "soft delete", "admin raw SQL"))
        if kind == "reschedule":
            # The customer looks for another hour the way every customer does: through the cache.
            free = await self.look(conn, delays, cal, choices.choice(self.business.hours))
            targets = [h for h in free if h != hour]
            if not targets:
                self.active[booking] = (cal, hour)
                return
            new = choices.choice(targets)
            sent = self.clock()
            try:
                await conn.execute(RESCHEDULE, (at(new), at(new + HOUR), booking))
            except pg_errors.UniqueViolation:
                self.tally.conflicts += 1
                self.active[booking] = (cal, hour)
                return
            self.checker.freed((cal.index, hour), sent)
            self.checker.booked((cal.index, new), self.clock())
            self.active[booking] = (cal, new)
            self.tally.moves += 1
        else:
            sent = self.clock()
            if kind == "cancel by status":
                await conn.execute(CANCEL, (booking,))
            elif kind == "soft delete":
                await conn.execute(SOFT_DELETE, (booking,))
            else:
                await conn.execute(ADMIN_CLEAR, (cal.company, cal.branch, cal.service, at(hour)))
            self.checker.freed((cal.index, hour), sent)
            self.tally.frees += 1
        self.tally.count(kind)

    # --- invalidations, seen from outside -------------------------------------------------------------
    async def watch_invalidations(self, ready: asyncio.Event) -> None:
        """Follow the worker's events topic: an event is published only after Redis acknowledged its
        UNLINK, so its record timestamp bounds when the slot's keys were gone."""
        if self.events is None:
            ready.set()
            return
        by_tenant = {
            (str(c.company), str(c.branch), str(c.service)): c.index for c in self.business.calendars
        }
        # Wall clock -> this run's monotonic clock (the checker's), fixed once.
        offset = time.time() - self.clock()
        async for record in follow_from_end(self.events.options, self.events.topic, ready):
            self._invalidated(by_tenant, record.value, invalidated_by(record.timestamp, offset))

    def _invalidated(
        self, by_tenant: dict[tuple[str, str, str], int], value: bytes | None, at: float
    ) -> None:
        try:
            event = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        for prefix, window in (("", "new_window"), ("", "old_window"), ("old_", "old_window")):
            calendar = by_tenant.get(
                (
                    str(event.get(f"{prefix}company_id")),
                    str(event.get(f"{prefix}branch_id")),
                    str(event.get(f"{prefix}service_id")),
                )
            )
            bounds = event.get(window)
            if calendar is None or not isinstance(bounds, dict):
                continue
            starts = datetime.fromisoformat(str(bounds.get("starts_at")))
            self.checker.invalidated((calendar, int(starts.timestamp())), at)
            self.tally.invalidations += 1

    # --- the run ----------------------------------------------------------------------------------------
    async def run(self, on_second: Callable[[Tally, float], None] | None = None) -> Checker:
        """Run for ``workload.seconds``; ``on_second(tally, elapsed)`` once a second for a live view."""
        self._redis = redis_client(RedisConnection.parse(self.redis_url))
        self._cache = LeasedCache(self._redis) if self.leased else None
        ready = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            listener = asyncio.create_task(self.watch_invalidations(ready))
            await asyncio.wait_for(ready.wait(), timeout=10)
            began = self.clock()
            tasks = [asyncio.create_task(self.reader(i)) for i in range(self.workload.readers)]
            tasks += [asyncio.create_task(self.mover(i)) for i in range(self.workload.movers)]
            deadline = began + self.workload.seconds
            while (left := deadline - self.clock()) > 0:
                done = [t for t in tasks if t.done()]
                for task in done:
                    task.result()  # a reader that died takes the run with it, with its error
                await asyncio.sleep(min(1.0, left))  # the run's own clock: a live-view tick
                if on_second is not None:
                    on_second(self.tally.snapshot(), self.clock() - began)
            self._stop.set()
            await asyncio.gather(*tasks)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        finally:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await self._redis.aclose()
        return self.checker
