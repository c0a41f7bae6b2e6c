"""Control records: what slotguard itself writes beside Debezium's records, for the worker to see.

A control record goes to the connector's heartbeat topic (which every worker already follows, see
``processor.worker.source_watch``) with the header :data:`CONTROL_HEADER` naming its kind and a JSON value.
Today there is one kind, the source gap: a stretch of the database's change stream that was never
captured (a replication slot dropped or invalidated), written when it is detected and again when it is
recovered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Header that marks a record as slotguard's own; its value is the record's kind.
CONTROL_HEADER = "slotguard.control"

#: The kind of a source-gap record.
SOURCE_GAP = "source-gap"


def format_lsn(lsn: int) -> str:
    """Postgres' notation of a WAL position: ``0/1F1A220``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """The inverse of :func:`format_lsn`; raises ``ValueError`` on anything else."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text[:40]!r}")
    return (int(high, 16) << 32) | int(low, 16)


class SourceGap(BaseModel):
    """A stretch of the change stream that no consumer saw.

    ``state`` is ``detected`` while the source is stopped on it and ``recovered`` once the slot was
    recreated (``resumed_at_lsn``) and what may be stale flushed (``flushed_keys`` keys, ``scope``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: Literal["detected", "recovered"]
    slot: str = Field(max_length=64)
    reason: str = Field(max_length=300)
    lost_from_lsn: int = Field(ge=0)
    lost_from_time: datetime | None = None
    resumed_at_lsn: int | None = Field(default=None, ge=0)
    scope: str | None = Field(default=None, max_length=300)
    flushed_keys: int | None = Field(default=None, ge=0)
    recorded_at: datetime

    def describe(self) -> str:
        """One line for logs and ``/healthz``."""
        since = f" ({self.lost_from_time:%Y-%m-%dT%H:%M:%SZ})" if self.lost_from_time else ""
        lost = f"replication slot {self.slot!r} {self.reason}: the change stream is lost from LSN " + (
            f"{format_lsn(self.lost_from_lsn)}{since}"
        )
        if self.state == "detected":
            return f"{lost}; recover with: slotguard source recover"
        resumed = format_lsn(self.resumed_at_lsn) if self.resumed_at_lsn is not None else "?"
        return (
            f"{lost} to {resumed}; recovered, {self.flushed_keys or 0} cached key(s) flushed ({self.scope})"
        )
