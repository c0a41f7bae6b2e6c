"""The source's health and its recovery from a gap: ``slotguard source status|recover`` and the relay's
``SLOTGUARD_ON_SOURCE_GAP``.

Recovery, in the order that loses nothing: (1) the publication (if missing) and a new slot -- from its
LSN on, every change is captured again; (2) the connector's offsets reset, so it streams from the new slot
(the relay's file is set aside; Kafka Connect's are deleted through its REST API); (3) the gap recorded on
a control record the worker sees (:mod:`schemas.control`); (4) every key that may be stale flushed. A
reader that filled a key during the gap filled it from before a booking it never heard of; the flush runs
after (1), so a fill it leaves was read after the gap's commits, and any change since is in the new slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from connectors.config import CONNECTOR_NAME, captured_tables, heartbeat_topic
from connectors.connect_api import ConnectClient
from connectors.errors import SourceGapError, SourceUnreachable
from connectors.relay import offsets_file
from connectors.source_gap import (
    Gap,
    SlotState,
    StoredPosition,
    find_gap,
    read_relay_position,
    read_slot,
    recreate_slot,
    set_aside_relay_offsets,
)
from processor.core.keys import glob_escape
from processor.worker.cluster import ClusterNodes
from processor.worker.redis_connect import redis_client
from schemas.control import CONTROL_HEADER, SOURCE_GAP, SourceGap, format_lsn
from schemas.errors import ConfigError, InputError
from slotguard.operate.flush import Flush, FlushMetrics, FlushProgress
from slotguard.settings import Settings
from slotguard.wiring import core_config, kafka_connection, redis_connection

log = logging.getLogger("slotguard.source")

#: How far before the gap's first lost commit a scoped flush looks at ``SLOTGUARD_CHANGED_AT_COLUMN``:
#: ``now()`` is a transaction's start, so a transaction open for up to this long when the stream was lost
#: still counts.
CHANGED_SCOPE_MARGIN = timedelta(minutes=10)

#: More tenants changed in a gap than this, and a scoped flush flushes everything instead (as many
#: patterns as tenants means as many full SCANs).
MAX_SCOPED_TENANTS = 200

ScopeMode = Literal["all", "changed"]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    runtime: str  # "relay" or "connect <url>"
    position: StoredPosition | None
    slot: SlotState | None
    gap: Gap | None


def connect_position(client: ConnectClient, name: str) -> StoredPosition | None:
    """The position in Kafka Connect's stored offsets of the connector."""
    for entry in client.offsets(name):
        offset = entry.get("offset")
        if isinstance(offset, dict):
            position = StoredPosition.from_offset(offset)
            if position is not None:
                return position
    return None


def _database(settings: Settings) -> psycopg.Connection[Any]:
    if settings.database_url is None:
        raise ConfigError("SLOTGUARD_DATABASE_URL is not set; the source's slot lives in that database")
    try:
        return psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:300]
        password = urlsplit(settings.database_url.get_secret_value()).password
        if password:
            reason = reason.replace(password, "***")
        raise SourceUnreachable(f"cannot reach Postgres to check the replication slot: {reason}") from None


def diagnose(
    settings: Settings, connect: ConnectClient | None = None, name: str = CONNECTOR_NAME
) -> SourceStatus:
    """Compare the connector's stored position with its slot."""
    if connect is not None:
        position, runtime = connect_position(connect, name), "kafka connect"
    else:
        position, runtime = read_relay_position(offsets_file(settings)), "relay"
    with _database(settings) as conn:
        slot = read_slot(conn, settings.slot_name)
    return SourceStatus(runtime, position, slot, find_gap(settings.slot_name, position, slot))


# --- what to flush -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose keys a flush deletes: everyone's (``tenants`` None), or these (company, branch) pairs -- a
    branch of None is any branch of the company, ``""`` the company's keys without a branch."""

    tenants: tuple[tuple[str, str | None], ...] | None
    note: str = ""

    def patterns(self, settings: Settings) -> list[str]:
        template = core_config(settings).template
        prefix = glob_escape(settings.redis_key_prefix)
        if self.tenants is None:
            return [prefix + template.pattern()]
        return [prefix + template.pattern(c, b) for c, b in self.tenants]

    def describe(self) -> str:
        if self.tenants is None:
            return "every cached key" + (f" ({self.note})" if self.note else "")
        return f"the keys of {len(self.tenants)} tenant(s) whose rows changed" + (
            f" ({self.note})" if self.note else ""
        )


def tenant_scope(settings: Settings, company: str | None, branch: str | None) -> Scope:
    """``--company``/``--branch`` as a scope; ids checked like any id that becomes part of a key."""
    if company is None:
        if branch is not None:
            raise ConfigError("--branch needs --company")
        return Scope(None)
    guard = core_config(settings).guard
    try:
        guard.check("company", company)
        if branch is not None:
            guard.check("branch", branch)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    return Scope(((company, branch),))


def changed_scope(settings: Settings, since: datetime | None) -> Scope:
    """The tenants whose appointment rows changed since ``since``, read from ``SLOTGUARD_CHANGED_AT_COLUMN``.

    Rows deleted outright in the gap left nothing to read, so this misses their tenants; hence ``all``
    is the default scope."""
    if since is None:
        return Scope(None, "the gap's start time is unknown")
    columns = settings.appointment_columns
    query = sql.SQL("SELECT DISTINCT {}::text, {}::text FROM {}.{} WHERE {} >= %s LIMIT %s").format(
        sql.Identifier(columns.get("company_id", "company_id")),
        sql.Identifier(columns.get("branch_id", "branch_id")),
        sql.Identifier(settings.db_schema),
        sql.Identifier(settings.appointments_table),
        sql.Identifier(settings.changed_at_column),
    )
    with _database(settings) as conn:
        rows = conn.execute(query, (since - CHANGED_SCOPE_MARGIN, MAX_SCOPED_TENANTS + 1)).fetchall()
    if len(rows) > MAX_SCOPED_TENANTS:
        return Scope(None, f"more than {MAX_SCOPED_TENANTS} tenants changed")
    guard = core_config(settings).guard
    tenants: list[tuple[str, str | None]] = []
    for company, branch in rows:
        try:
            tenants.append(
                (guard.check("company", company), "" if branch is None else guard.check("branch", branch))
            )
        except InputError as exc:
            log.warning("not flushing a tenant whose ids cannot be part of a key: %s", exc)
    since_text = f"{since - CHANGED_SCOPE_MARGIN:%Y-%m-%dT%H:%M:%SZ}"
    return Scope(tuple(sorted(set(tenants), key=str)), f"{settings.changed_at_column} >= {since_text}")


# --- doing it ------------------------------------------------------------------------------------------------


def new_flush(
    settings: Settings,
    client: Any,
    scope: Scope,
    metrics: FlushMetrics | None = None,
    nodes: list[Any] | None = None,
) -> Flush:
    return Flush(
        client,
        patterns=scope.patterns(settings),
        key_prefix=settings.redis_key_prefix,
        rate=settings.flush_rate,
        chunk=settings.flush_chunk,
        metrics=metrics,
        nodes=nodes,
    )


def _redis(settings: Settings) -> Any:
    return redis_client(redis_connection(settings), socket_timeout=30.0)


async def _flush_of(
    settings: Settings, scope: Scope, metrics: FlushMetrics | None = None
) -> tuple[Flush, Any]:
    """The flush of ``scope`` and what to close after it: on a cluster, SCAN walks every primary."""
    conn = redis_connection(settings)
    client = redis_client(conn, socket_timeout=30.0)
    if conn.kind != "cluster":
        return new_flush(settings, client, scope, metrics), client
    nodes = ClusterNodes(client, conn)
    await nodes.ensure()
    primaries = [nodes.client(name, socket_timeout=30.0) for name in nodes.primaries()]
    return new_flush(settings, client, scope, metrics, primaries), nodes


async def count_keys(settings: Settings, scope: Scope) -> int:
    flush, closing = await _flush_of(settings, scope)
    try:
        return await flush.count()
    finally:
        await closing.aclose()


async def run_flush(settings: Settings, scope: Scope, metrics: FlushMetrics | None = None) -> FlushProgress:
    flush, closing = await _flush_of(settings, scope, metrics)
    try:
        return await flush.run()
    finally:
        await closing.aclose()


async def publish_gap(settings: Settings, gap: SourceGap) -> None:
    """Write ``gap`` on the heartbeat topic, where every worker's source watch sees it."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka_connection(settings).aiokafka_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            heartbeat_topic(settings),
            gap.model_dump_json().encode(),
            key=b'{"slotguard":"source-gap"}',
            headers=[(CONTROL_HEADER, SOURCE_GAP.encode())],
        )
    finally:
        await producer.stop()


def gap_record(settings: Settings, gap: Gap, **recovered: Any) -> SourceGap:
    return SourceGap(
        state="recovered" if recovered else "detected",
        slot=settings.slot_name,
        reason=gap.reason,
        lost_from_lsn=gap.position.lsn,
        lost_from_time=gap.position.time,
        recorded_at=datetime.now(UTC),
        **recovered,
    )


@dataclass(frozen=True, slots=True)
class Recovered:
    resumed_at: int
    scope: Scope
    flushed: FlushProgress
    record: SourceGap


def _pending_key(settings: Settings) -> str:
    return f"{settings.redis_key_prefix}slotguard:source-recovery:{settings.slot_name}"


async def pending_recovery(settings: Settings) -> tuple[Gap, int, ScopeMode] | None:
    """A recovery that was killed after the slot was recreated (its flush is still to finish)."""
    client = _redis(settings)
    try:
        saved = await client.hgetall(_pending_key(settings))
    finally:
        await client.aclose()
    if not saved:
        return None
    record = SourceGap.model_validate_json(saved[b"gap"])
    mode: ScopeMode = "changed" if saved[b"scope"] == b"changed" else "all"
    gap = Gap(record.slot, record.reason, StoredPosition(record.lost_from_lsn, record.lost_from_time))
    return gap, int(saved[b"resumed"]), mode


async def _set_pending(settings: Settings, value: dict[str, Any] | None) -> None:
    client = _redis(settings)
    try:
        if value is None:
            await client.delete(_pending_key(settings))
        else:
            await client.hset(_pending_key(settings), mapping=value)
    finally:
        await client.aclose()


def recover(
    settings: Settings,
    gap: Gap,
    scope_mode: ScopeMode,
    *,
    connect: ConnectClient | None = None,
    name: str = CONNECTOR_NAME,
    metrics: FlushMetrics | None = None,
    say: Callable[[str], None] = log.info,
    resumed_at: int | None = None,
) -> Recovered:
    """Recover from ``gap``: new slot, offsets reset, flush, gap recorded (see the module's docstring).

    The gap is noted in Redis before the slot is recreated (after which it can no longer be seen in
    Postgres) and cleared once recorded on Kafka: a recovery killed in between goes on when started
    again (``resumed_at``: the slot was already made at that LSN)."""
    if resumed_at is None:
        # Redis first: if it is down, nothing has changed yet.
        asyncio.run(
            _set_pending(
                settings,
                {"gap": gap_record(settings, gap).model_dump_json(), "scope": scope_mode, "resumed": -1},
            )
        )
        if connect is not None:
            # A running task would write the old offsets back; STOPPED keeps its config (Kafka >= 3.5).
            connect.stop(name)
            say(f"connector {name} stopped")
        with _database(settings) as conn:
            resumed_at = recreate_slot(
                conn, settings.slot_name, settings.publication_name, captured_tables(settings)
            )
        asyncio.run(_set_pending(settings, {"resumed": resumed_at}))
        say(
            f"replication slot {settings.slot_name!r} created at LSN {format_lsn(resumed_at)}: "
            "changes are captured again"
        )
        if connect is not None:
            connect.reset_offsets(name)
            connect.resume(name)
            say(f"connector {name}'s offsets reset; the connector resumed from the new slot")
        else:
            moved = set_aside_relay_offsets(offsets_file(settings), gap.position.lsn)
            say(f"relay offsets set aside to {moved}" if moved else "no relay offsets to reset")
    else:
        say(f"resuming the recovery of the gap from LSN {format_lsn(gap.position.lsn)}")
    scope = changed_scope(settings, gap.position.time) if scope_mode == "changed" else Scope(None)
    say(f"flushing {scope.describe()}")
    flushed = asyncio.run(run_flush(settings, scope, metrics))
    say(f"flushed {flushed.deleted} key(s) in {flushed.seconds:.1f}s ({flushed.scanned} scanned)")
    record = gap_record(
        settings, gap, resumed_at_lsn=resumed_at, scope=scope.describe()[:300], flushed_keys=flushed.deleted
    )
    asyncio.run(publish_gap(settings, record))
    asyncio.run(_set_pending(settings, None))
    say(f"gap recorded on {heartbeat_topic(settings)}")
    return Recovered(resumed_at, scope, flushed, record)


def guard_relay_start(settings: Settings) -> None:
    """Before the relay starts Debezium: stop on a gap (``SLOTGUARD_ON_SOURCE_GAP=stop``, recording it for
    the workers) or recover from it by itself (``flush``, also finishing a recovery that was killed)."""
    try:
        status = diagnose(settings)
    except SourceUnreachable as exc:
        # Debezium will say why it cannot connect, in its own words; the check runs again at the next start.
        log.warning("%s; starting without the gap check", exc)
        return
    gap = status.gap
    if settings.on_source_gap == "stop":
        if gap is None:
            return
        try:
            asyncio.run(publish_gap(settings, gap_record(settings, gap)))
        except Exception as exc:  # Kafka down: the error line below still says it all
            log.warning("could not record the gap on Kafka: %s", type(exc).__name__)
        raise SourceGapError(gap.describe())
    resumed_at = None
    if gap is None:
        pending = asyncio.run(pending_recovery(settings))
        if pending is None or pending[1] < 0:
            return
        gap, resumed_at, _ = pending
    log.warning(
        "%s -- SLOTGUARD_ON_SOURCE_GAP=flush: recovering by itself", gap.describe().split(". Recover")[0]
    )
    recover(settings, gap, "all", resumed_at=resumed_at)
