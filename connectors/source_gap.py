"""Is the change stream whole? The connector's stored position against its replication slot.

Debezium stores where it got to (the LSN of the last change it handed on) in its offsets: a file for the
embedded relay, Connect's offsets topic for Kafka Connect. Postgres keeps the WAL from the slot's
``restart_lsn`` on. When the slot is gone (dropped, or lost in a failover without failover slots) or
invalidated (``wal_status = lost``: ``max_slot_wal_keep_size`` removed WAL it needed), the changes after
the stored position can no longer be read by anyone: Debezium refuses to start, and both obvious ways
forward -- new offsets, or a re-snapshot, whose reads the worker rightly ignores -- skip the gap silently.
This module finds such a gap and does the database and offset side of recovering from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from connectors.errors import SourceStateError
from schemas.control import format_lsn

#: A Debezium Postgres offset as JsonConverter writes it. In the relay's offsets file (a Java-serialised
#: ``HashMap<byte[], byte[]>``) each byte array is stored as-is, so the JSON can be found in the raw bytes
#: without a JVM.
_OFFSET_JSON = re.compile(rb'\{[^{}]*"lsn":\d+[^{}]*\}')


@dataclass(frozen=True, slots=True)
class StoredPosition:
    """Where the connector's offsets say the stream continues."""

    lsn: int
    time: datetime | None

    @classmethod
    def from_offset(cls, offset: dict[str, Any]) -> StoredPosition | None:
        """From Debezium's offset map; None when it holds no LSN.

        The earliest of ``lsn`` (last change handed on), ``lsn_commit`` and ``lsn_proc``: a transaction
        whose commit came after ``lsn_commit`` may be only partly handed on, so the gap starts there."""
        lsns = [
            v
            for v in (offset.get("lsn"), offset.get("lsn_commit"), offset.get("lsn_proc"))
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0
        ]
        if not lsns:
            return None
        lsn = min(lsns)
        usec = offset.get("ts_usec")
        when = datetime.fromtimestamp(usec / 1e6, UTC) if isinstance(usec, int) and usec > 0 else None
        return cls(lsn, when)


def read_relay_position(path: Path) -> StoredPosition | None:
    """The position in the relay's offsets file; None when there is no file (the relay never ran)."""
    import orjson

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    found = _OFFSET_JSON.findall(raw)
    if not found:
        return None
    try:
        offset = orjson.loads(found[-1])
    except orjson.JSONDecodeError:
        raise SourceStateError(f"the relay's offsets file {path} holds an offset that is not JSON") from None
    return StoredPosition.from_offset(offset)


@dataclass(frozen=True, slots=True)
class SlotState:
    """A row of ``pg_replication_slots``, the parts that matter here."""

    name: str
    active: bool
    wal_status: str | None  # reserved / extended / unreserved / lost (Postgres >= 13)
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    failover: bool | None  # Postgres >= 17; None before
    safe_wal_size: int | None  # bytes left before max_slot_wal_keep_size invalidates it; None = no limit


def _lsn(value: object) -> int | None:
    if value is None:
        return None
    high, _, low = str(value).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def read_slot(conn: psycopg.Connection[Any], name: str) -> SlotState | None:
    """The slot named ``name``, or None when it does not exist."""
    has_failover = conn.info.server_version >= 170000
    query = sql.SQL(
        "SELECT active, wal_status, restart_lsn::text, confirmed_flush_lsn::text, safe_wal_size, {} "
        "FROM pg_replication_slots WHERE slot_name = %s"
    ).format(sql.SQL("failover") if has_failover else sql.SQL("NULL::boolean"))
    row = conn.execute(query, (name,)).fetchone()
    if row is None:
        return None
    active, wal_status, restart, confirmed, safe, failover = row
    return SlotState(
        name,
        bool(active),
        wal_status,
        _lsn(restart),
        _lsn(confirmed),
        failover,
        None if safe is None else int(safe),
    )


@dataclass(frozen=True, slots=True)
class Gap:
    """A stored position the slot can no longer serve."""

    slot: str
    reason: str  # "is missing" / "was invalidated (wal_status lost)"
    position: StoredPosition

    def describe(self) -> str:
        since = f" ({self.position.time:%Y-%m-%dT%H:%M:%SZ})" if self.position.time else ""
        return (
            f"replication slot {self.slot!r} {self.reason}: the change stream is lost from LSN "
            f"{format_lsn(self.position.lsn)}{since}; changes committed since were never captured, so their "
            "cache keys may be stale. Recover with: slotguard source recover"
        )


def find_gap(slot_name: str, position: StoredPosition | None, slot: SlotState | None) -> Gap | None:
    """The gap between ``position`` and ``slot``, if there is one.

    No stored position means the connector starts afresh (it creates the slot): no gap. A slot that is
    missing or lost while a position is stored is one; so is a slot whose ``restart_lsn`` lies past the
    stored position (it was recreated: the WAL in between is not in it)."""
    if position is None:
        return None
    if slot is None:
        return Gap(slot_name, "is missing", position)
    if slot.wal_status == "lost":
        return Gap(slot_name, "was invalidated (wal_status lost)", position)
    if (
        slot.confirmed_flush_lsn is not None
        and slot.confirmed_flush_lsn > position.lsn
        and (slot.restart_lsn is not None and slot.restart_lsn > position.lsn)
    ):
        return Gap(slot_name, "starts after the stored position (it was recreated)", position)
    return None


def recreate_slot(conn: psycopg.Connection[Any], slot_name: str, publication: str, tables: list[str]) -> int:
    """Make the publication (when missing) and then the slot, as the connector would; the slot's LSN.

    The publication comes first: a slot decodes with the catalog as of each change, so a publication made
    after the slot would not cover the changes in between. A lost slot is dropped first. On Postgres >= 17
    the slot is a failover slot (synchronised to standbys that have ``sync_replication_slots`` on)."""
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    if exists is None:
        names = [sql.Identifier(*t.split(".", 1)) for t in tables]
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(publication), sql.SQL(", ").join(names)
            )
        )
    slot = read_slot(conn, slot_name)
    if slot is not None:
        if slot.active:
            raise SourceStateError(
                f"replication slot {slot_name!r} is in use; stop the relay or the connector first"
            )
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))
    if conn.info.server_version >= 170000:
        query = "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput', false, false, true)"
    else:
        query = "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')"
    row = conn.execute(query, (slot_name,)).fetchone()
    lsn = _lsn(row[0] if row else None)
    assert lsn is not None
    return lsn


def set_aside_relay_offsets(path: Path, lost_from: int) -> Path | None:
    """Move the relay's offsets file away (kept, named after the lost LSN), so the relay starts from the
    slot; the path it was moved to, or None when there was none."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.lost-{lost_from:X}")
    path.replace(target)
    return target
