"""The simulated booking business: calendars, bookable hours, the cache keys, and the SQL each booking source
issues.

A **calendar** is one company / branch / service (one Cal.com event type); a **slot** is one whole hour of
a calendar, bookable once. The booking app caches "free slots around hour X" under the key of bucket X, and
its answer lists the free hours among X-1, X and X+1 -- the same three buckets the worker invalidates for a
booking at X (``SLOTGUARD_WINDOW_HOURS_BEFORE/AFTER`` = 1), so a booking changes exactly the answers it
invalidates.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import orjson
import psycopg

from processor.core.config import CoreConfig
from slotguard.sim.checker import Slot

HOUR = 3600

#: The demo schema's rule that makes a double booking a refusal: one live booking per slot (only for the
#: simulation's own rows, so nothing else in the database changes behaviour), and the Cal.com booking uid
#: the webhook upserts on.
SCHEMA = (
    "CREATE UNIQUE INDEX IF NOT EXISTS sim_one_booking_per_slot ON appointments "
    "(company_id, branch_id, service_id, starts_at) "
    "WHERE status <> 'cancelled' AND deleted_at IS NULL AND source LIKE 'sim-%'",
    "CREATE UNIQUE INDEX IF NOT EXISTS sim_calcom_booking ON appointments (calcom_booking_id) "
    "WHERE source = 'sim-webhook'",
)


@dataclass(frozen=True)
class Workload:
    """The seeded workload: same numbers and seed → the same choices, mode after mode."""

    seconds: float = 60.0
    seed: int = 7
    companies: int = 6
    branches: int = 2
    services: int = 2  # per branch, each its own event type
    days: int = 2
    open_hour: int = 9
    close_hour: int = 17
    readers: int = 16
    think_ms: float = 40.0  # mean pause between a reader's requests (exponential)
    book_probability: float = 0.12  # a read that ends in a booking attempt
    movers: int = 2  # tasks that reschedule, cancel, soft-delete and clear slots
    occupancy: float = 0.5  # the movers free slots while more than this share is booked
    fill_median_ms: float = 80.0  # the Cal.com call on a miss: lognormal
    fill_sigma: float = 0.8
    fill_max_ms: float = 1000.0
    ttl_s: int = 300

    def fill_delay(self, rng: random.Random) -> float:
        """Seconds a miss takes to compute its answer (the simulated Cal.com API call)."""
        ms = rng.lognormvariate(math.log(self.fill_median_ms), self.fill_sigma)
        return min(ms, self.fill_max_ms) / 1000

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Calendar:
    index: int
    company: int
    branch: int
    service: int
    event_type: int


@dataclass(frozen=True)
class Business:
    calendars: tuple[Calendar, ...]
    hours: tuple[int, ...]  # bookable hour starts, epoch seconds, ascending
    config: CoreConfig

    @property
    def slots(self) -> int:
        return len(self.calendars) * len(self.hours)

    def around(self, hour: int) -> tuple[int, ...]:
        """The hours an answer for bucket ``hour`` lists (X-1, X, X+1), bookable ones only."""
        open_hours = self._open
        return tuple(h for h in (hour - HOUR, hour, hour + HOUR) if h in open_hours)

    @cached_property
    def _open(self) -> frozenset[int]:
        return frozenset(self.hours)

    def key(self, calendar: Calendar, hour: int) -> str:
        """The physical Redis key of bucket ``hour`` of ``calendar``, rendered by the worker's own core."""
        keys = self.config.template.render(
            str(calendar.company), str(calendar.branch), str(calendar.event_type), [hour]
        )
        return self.config.redis_key_prefix + keys[0]

    def keys_of(self, calendar: Calendar, hour: int) -> list[str]:
        """Every key a booking of ``(calendar, hour)`` changes the answer of."""
        return [self.key(calendar, h) for h in (hour - HOUR, hour, hour + HOUR)]


def encode(free: tuple[int, ...]) -> bytes:
    return orjson.dumps({"free": free})


def decode(value: bytes) -> tuple[int, ...]:
    return tuple(orjson.loads(value)["free"])


def first_day(zone_today: date) -> date:
    """Bookings go a week ahead, so no real 'now' ever falls inside the simulated hours."""
    return zone_today + timedelta(days=7)


def seed_business(
    conn: psycopg.Connection[tuple[object, ...]],
    workload: Workload,
    config: CoreConfig,
    *,
    company_base: int,
    start: date,
) -> Business:
    """Create the demo schema's rules and this run's services; the business for ``company_base``."""
    for statement in SCHEMA:
        conn.execute(statement)
    calendars: list[Calendar] = []
    for c in range(workload.companies):
        for b in range(1, workload.branches + 1):
            for s in range(workload.services):
                company = company_base + c
                event_type = 900_000 + (company % 10_000) * 100 + b * 10 + s
                row = conn.execute(
                    "INSERT INTO services (company_id, branch_id, name, calcom_event_type_id, duration_minutes) "
                    "VALUES (%s, %s, %s, %s, 60) RETURNING id",
                    (company, b, f"sim service {s}", event_type),
                ).fetchone()
                assert row is not None
                calendars.append(Calendar(len(calendars), company, b, int(str(row[0])), event_type))
    zone = config.window.zone
    hours = sorted(
        int(datetime.combine(start + timedelta(days=d), datetime.min.time(), zone).timestamp()) + h * HOUR
        for d in range(workload.days)
        for h in range(workload.open_hour, workload.close_hour)
    )
    return Business(tuple(calendars), tuple(hours), config)


def at(hour: int) -> datetime:
    return datetime.fromtimestamp(hour, UTC)


# --- the booking sources, as the SQL each issues -------------------------------------------------------
INSERT_PHONE = (
    "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source) "
    "VALUES (%s, %s, %s, %s, %s, 'booked', 'sim-phone') RETURNING id"
)
UPSERT_WEBHOOK = (
    "INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source, "
    "calcom_booking_id) VALUES (%s, %s, %s, %s, %s, 'booked', 'sim-webhook', %s) "
    "ON CONFLICT (calcom_booking_id) WHERE source = 'sim-webhook' DO UPDATE SET "
    "starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, status = EXCLUDED.status, updated_at = now() "
    "RETURNING id"
)
RESCHEDULE = "UPDATE appointments SET starts_at = %s, ends_at = %s, updated_at = now() WHERE id = %s"
CANCEL = "UPDATE appointments SET status = 'cancelled', updated_at = now() WHERE id = %s"
SOFT_DELETE = "UPDATE appointments SET deleted_at = now(), updated_at = now() WHERE id = %s"
ADMIN_CLEAR = (
    "UPDATE appointments SET status = 'cancelled', notes = 'cleared by admin' "
    "WHERE company_id = %s AND branch_id = %s AND service_id = %s AND starts_at = %s "
    "AND status <> 'cancelled' AND deleted_at IS NULL"
)
BOOKED_HOURS = (
    "SELECT starts_at FROM appointments WHERE company_id = %s AND branch_id = %s AND service_id = %s "
    "AND starts_at >= %s AND starts_at < %s AND status <> 'cancelled' AND deleted_at IS NULL"
)


def slot_of(calendar: Calendar, hour: int) -> Slot:
    return (calendar.index, hour)
