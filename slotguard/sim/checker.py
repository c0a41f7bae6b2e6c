"""The consistency checker: every cached answer against Postgres' committed truth at the moment it was served.

Pure: it is fed what the simulation saw (booking commits, reads, cache fills, key deletions, each with the
simulation's monotonic clock) and answers with figures; no I/O, so its verdicts are unit-tested on hand-built
timelines.

Truth is recorded conservatively, so that whatever is called stale certainly was:

* a slot is **booked** from the moment the booking's ``COMMIT`` *returned* to the client (it became visible no
  later than that) until the moment the statement that frees it was *sent* (it was still booked before that);
* a read is **served** at the moment its ``GET`` was sent; a fill **lands** at the moment its ``SET`` was sent.

A cache hit is a **stale read** when it offered a slot that was booked when it was served. The **stale window**
of a booking is commit → the last stale read of its slot. A **stale fill** is a cache write whose value was
already stale when it landed. A stale read or fill **after the delete** happened after the worker had
invalidated that booking's slot (its event was published, which the worker does only once Redis acknowledged
the ``UNLINK``): a stale answer the invalidation should have removed -- exactly what the stale-fill race
produces, and what the guard and leases exist to prevent. Misses are answered from Postgres and are never
stale.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: A bookable slot: (calendar, hour) -- a calendar is one company / branch / service.
Slot = tuple[int, int]
FOREVER = math.inf


@dataclass(slots=True)
class Booking:
    """One stretch of a slot being booked: ``since`` (commit returned) until ``until`` (free sent)."""

    slot: Slot
    since: float
    until: float = FOREVER
    last_stale_read: float | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """A cache hit: ``key`` served at ``at``, offering ``offered`` as free."""

    at: float
    key: str
    offered: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class Fill:
    """A cache write of ``offered`` under ``key`` sent at ``at``; ``landed`` False when a lease refused it."""

    at: float
    key: str
    offered: tuple[Slot, ...]
    landed: bool = True


@dataclass(frozen=True)
class Figures:
    """What the checker found; percentiles in milliseconds, ``None`` when there was nothing to measure."""

    reads: int
    hits: int
    hit_rate: float
    stale_reads: int
    stale_read_rate: float
    stale_reads_after_delete: int
    stale_window_p50_ms: float | None
    stale_window_p99_ms: float | None
    stale_window_max_ms: float | None
    stale_bookings: int
    bookings: int
    fills: int
    fills_refused: int
    stale_fills: int
    stale_fills_after_delete: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest-rank method; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Checker:
    """Collects the timeline; :meth:`figures` judges it."""

    _bookings: dict[Slot, list[Booking]] = field(default_factory=lambda: defaultdict(list))
    _reads: list[Read] = field(default_factory=list)
    _fills: list[Fill] = field(default_factory=list)
    _invalidations: dict[Slot, list[float]] = field(default_factory=lambda: defaultdict(list))
    misses: int = 0

    # --- the timeline --------------------------------------------------------------------------------
    def booked(self, slot: Slot, at: float) -> None:
        """A booking of ``slot`` whose commit returned at ``at``."""
        self._bookings[slot].append(Booking(slot, since=at))

    def freed(self, slot: Slot, at: float) -> None:
        """The statement that freed ``slot`` (cancel, soft delete, reschedule away) was sent at ``at``."""
        stretches = self._bookings.get(slot)
        if stretches and stretches[-1].until == FOREVER:
            stretches[-1].until = at

    def read(self, at: float, key: str, offered: Iterable[Slot]) -> None:
        self._reads.append(Read(at, key, tuple(offered)))

    def missed(self) -> None:
        self.misses += 1

    def fill(self, at: float, key: str, offered: Iterable[Slot], *, landed: bool = True) -> None:
        self._fills.append(Fill(at, key, tuple(offered), landed))

    def invalidated(self, slot: Slot, at: float) -> None:
        """The worker had deleted the keys of ``slot`` by ``at`` (the time its event was published)."""
        self._invalidations[slot].append(at)

    # --- verdicts ------------------------------------------------------------------------------------
    def booking_at(self, slot: Slot, at: float) -> Booking | None:
        """The booking holding ``slot`` at ``at``, if any."""
        for stretch in self._bookings.get(slot, ()):
            if stretch.since <= at < stretch.until:
                return stretch
        return None

    def stale_because(self, offered: Iterable[Slot], at: float) -> list[Booking]:
        """The bookings that make an answer offering ``offered`` at ``at`` stale."""
        found = []
        for slot in offered:
            booking = self.booking_at(slot, at)
            if booking is not None:
                found.append(booking)
        return found

    def invalidated_between(self, slot: Slot, after: float, before: float) -> bool:
        """Whether ``slot`` was invalidated in ``[after, before)``."""
        times = self._invalidations.get(slot)  # sorted by figures()
        if not times:
            return False
        index = bisect.bisect_left(times, after)
        return index < len(times) and times[index] < before

    def figures(self) -> Figures:
        for times in self._invalidations.values():
            times.sort()  # arrive nearly in order; bisected below
        for stretches in self._bookings.values():
            for stretch in stretches:
                stretch.last_stale_read = None
        stale_reads = after_delete = 0
        for read in self._reads:
            culprits = self.stale_because(read.offered, read.at)
            if not culprits:
                continue
            stale_reads += 1
            if any(self.invalidated_between(b.slot, b.since, read.at) for b in culprits):
                after_delete += 1
            for booking in culprits:
                if booking.last_stale_read is None or read.at > booking.last_stale_read:
                    booking.last_stale_read = read.at
        windows = [
            (b.last_stale_read - b.since) * 1000
            for stretches in self._bookings.values()
            for b in stretches
            if b.last_stale_read is not None
        ]
        stale_fills = fills_after_delete = 0
        landed = [f for f in self._fills if f.landed]
        for fill in landed:
            culprits = self.stale_because(fill.offered, fill.at)
            if culprits:
                stale_fills += 1
                if any(self.invalidated_between(b.slot, b.since, fill.at) for b in culprits):
                    fills_after_delete += 1
        hits = len(self._reads)
        reads = hits + self.misses
        return Figures(
            reads=reads,
            hits=hits,
            hit_rate=hits / reads if reads else 0.0,
            stale_reads=stale_reads,
            stale_read_rate=stale_reads / reads if reads else 0.0,
            stale_reads_after_delete=after_delete,
            stale_window_p50_ms=percentile(windows, 0.50),
            stale_window_p99_ms=percentile(windows, 0.99),
            stale_window_max_ms=max(windows) if windows else None,
            stale_bookings=len(windows),
            bookings=sum(len(s) for s in self._bookings.values()),
            fills=len(landed),
            fills_refused=len(self._fills) - len(landed),
            stale_fills=stale_fills,
            stale_fills_after_delete=fills_after_delete,
        )
