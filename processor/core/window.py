"""Which hour buckets of the slot cache an appointment window touches.

A bucket is a whole hour of the key time zone (``SLOTGUARD_KEY_TIMEZONE``), named by its start; buckets
are stepped in absolute time (3600 s), so a DST change or a +05:30 zone never skips or doubles an hour.
Covered: from ``before`` buckets ahead of the start's bucket through the later of ``after`` buckets past
it and the last bucket the appointment occupies (the one holding its last microsecond). A missing end
counts as one hour. With the defaults (1/1) that is the seed's 3-hour window: 14:00-15:00 -> 13, 14, 15;
23:30-00:30 -> 22, 23, 00 (next day).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from typing import Final

HOUR: Final = 3600
#: Longest window invalidated for one appointment (31 days of buckets); longer ones are truncated.
MAX_BUCKETS: Final = 24 * 31
_CACHE_LIMIT: Final = 1 << 16


class HourWindow:
    """Computes covered bucket starts (epoch seconds); caches the zone arithmetic per minute."""

    __slots__ = ("_floor_cache", "after", "before", "zone")

    def __init__(self, zone: tzinfo, before: int = 1, after: int = 1) -> None:
        self.zone = zone
        self.before = before
        self.after = after
        self._floor_cache: dict[int, int] = {}

    def bucket_of(self, epoch_seconds: int) -> int:
        """Start (epoch seconds) of the key-zone hour holding the instant ``epoch_seconds``."""
        minute = epoch_seconds // 60
        cached = self._floor_cache.get(minute)
        if cached is not None:
            return cached
        # Offsets change on whole minutes in every tz database zone, so one lookup serves the minute.
        at = minute * 60
        offset = datetime.fromtimestamp(at, self.zone).utcoffset()
        off = int(offset.total_seconds()) if offset is not None else 0
        local = at + off
        bucket = local - local % HOUR - off
        if len(self._floor_cache) >= _CACHE_LIMIT:
            self._floor_cache.clear()
        self._floor_cache[minute] = bucket
        return bucket

    def buckets(self, starts_at: datetime, ends_at: datetime | None) -> tuple[list[int], bool]:
        """Covered bucket starts, ascending, and whether the window was truncated to :data:`MAX_BUCKETS`."""
        # float seconds are exact to well under a microsecond for any date the cache can hold.
        start = starts_at.timestamp()
        end = ends_at.timestamp() if ends_at is not None else start + HOUR
        first = self.bucket_of(math.floor(start))
        last = first + self.after * HOUR
        if end > start:
            # The last occupied second: an end on a whole second belongs to the next bucket, not this one.
            occupied = self.bucket_of(math.ceil(end) - 1)
            if occupied > last:
                last = occupied
        count = (last - first) // HOUR + 1 + self.before
        truncated = count > MAX_BUCKETS
        if truncated:
            count = MAX_BUCKETS
        begin = first - self.before * HOUR
        return list(range(begin, begin + count * HOUR, HOUR)), truncated

    def bucket_datetime(self, bucket: int) -> datetime:
        """A bucket start as an aware datetime in the key zone."""
        return datetime.fromtimestamp(bucket, UTC).astimezone(self.zone)
