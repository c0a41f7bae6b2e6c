"""``slotguard doctor``: every way a CDC pipeline silently stops, checked, one line each.

Each check returns :class:`Check` -- ``ok`` / ``warn`` / ``fail`` with what was found and, when not ok, the
fix in words. Credentials are never part of a detail: errors from the clients are reduced to their class
and a message with the password replaced (see :func:`_clean`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from pydantic import SecretStr
from redis.exceptions import RedisError, ResponseError

from connectors.config import CONNECTOR_NAME
from connectors.connect_api import ConnectClient
from connectors.relay import offsets_file
from connectors.source_gap import SlotState, StoredPosition, find_gap, read_relay_position, read_slot
from processor.core.keys import glob_escape
from processor.worker.redis_connect import redis_client
from schemas.connections import RedisConnection
from schemas.control import format_lsn
from schemas.errors import SlotguardError
from schemas.rows import APPOINTMENT_FIELDS, SERVICE_FIELDS, resolve_columns
from slotguard.operate.kafka_group import committed_and_end_offsets, group_state, quiet_kafka_client
from slotguard.operate.source import connect_position
from slotguard.settings import Settings
from slotguard.wiring import core_config, kafka_connection, redis_connection, redis_wait_replicas

Status = Literal["ok", "warn", "fail"]
SYMBOL: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗"}

#: Retained WAL (bytes) of the slot above which doctor fails; warns above half.
DEFAULT_MAX_RETAINED_WAL = 1 << 30

_ID_TYPES = {"smallint", "integer", "bigint", "numeric", "text", "character varying", "uuid", "character"}
_TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}
_TEXT_TYPES = {"text", "character varying", "character", "USER-DEFINED"}
_USABLE: dict[str, set[str]] = {
    "id": _ID_TYPES,
    "company_id": _ID_TYPES,
    "branch_id": _ID_TYPES,
    "service_id": _ID_TYPES,
    "calcom_event_type_id": _ID_TYPES,
    "starts_at": _TIME_TYPES,
    "ends_at": _TIME_TYPES,
    "deleted_at": _TIME_TYPES,
    "status": _TEXT_TYPES,
}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{SYMBOL[self.status]} {self.name}: {self.detail}"
        return f"{text} -- {self.fix}" if self.fix else text


def _clean(exc: BaseException, *secrets_: SecretStr | None) -> str:
    """One line of an exception with every known secret blanked out."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    for secret in secrets_:
        value = secret.get_secret_value() if secret is not None else ""
        if value:
            text = text.replace(value, "***")
    return text[:300]


def _password(url: SecretStr | None) -> SecretStr | None:
    from urllib.parse import urlsplit

    if url is None:
        return None
    try:
        password = urlsplit(url.get_secret_value()).password
    except ValueError:
        return None
    return SecretStr(password) if password else None


# --- settings ----------------------------------------------------------------------------------------------


def check_settings(settings: Settings) -> list[Check]:
    try:
        config = core_config(settings)
        from datetime import UTC, datetime

        keys = config.template.render(
            "1", "1", "1", config.window.buckets(datetime(2025, 1, 1, 12, tzinfo=UTC), None)[0]
        )
    except Exception as exc:  # any failure to build the core's configuration is the finding
        return [Check("settings", "fail", _clean(exc), "fix the SLOTGUARD_* variable it names")]
    return [
        Check(
            "settings",
            "ok",
            f"key zone {settings.key_timezone}, source zone {settings.source_timezone}, template renders "
            f"{keys[0]!r}, tenant pattern {settings.tenant_id_pattern or 'integers'}",
        )
    ]


# --- Postgres ----------------------------------------------------------------------------------------------


def check_postgres(settings: Settings, *, max_retained_wal: int = DEFAULT_MAX_RETAINED_WAL) -> list[Check]:
    if settings.database_url is None:
        return [
            Check(
                "postgres", "fail", "SLOTGUARD_DATABASE_URL is not set", "set it to the booking database DSN"
            )
        ]
    secret = _password(settings.database_url)
    try:
        conn = psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        return [
            Check(
                "postgres reachable",
                "fail",
                _clean(exc, secret, settings.database_url),
                "check host, port, user and password in SLOTGUARD_DATABASE_URL",
            )
        ]
    with conn:
        checks = [Check("postgres reachable", "ok", f"server {conn.info.server_version // 10000}")]
        checks += _wal(conn)
        checks += _tables(conn, settings)
        checks += _publication(conn, settings)
        checks += _slot(conn, settings, max_retained_wal)
    if settings.heartbeat_interval_ms <= 0:
        checks.append(
            Check(
                "heartbeat",
                "warn",
                "heartbeat.interval.ms=0: on a quiet table the slot's WAL is never confirmed",
                "set SLOTGUARD_HEARTBEAT_INTERVAL_MS (e.g. 10000) and re-register the connector",
            )
        )
    elif not settings.heartbeat_action_query:
        checks.append(
            Check(
                "heartbeat",
                "warn",
                "no heartbeat.action.query: while only uncaptured tables change, the slot does not move and "
                "retains their WAL",
                "set SLOTGUARD_HEARTBEAT_ACTION_QUERY (default: a pg_logical_emit_message) and re-register",
            )
        )
    else:
        checks.append(
            Check(
                "heartbeat",
                "ok",
                f"heartbeat.interval.ms={settings.heartbeat_interval_ms} with an action query: the slot moves "
                "on an idle database",
            )
        )
    return checks


def _one(conn: psycopg.Connection[Any], query: str | sql.Composed, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _wal(conn: psycopg.Connection[Any]) -> list[Check]:
    checks = []
    level = _one(conn, "SHOW wal_level")
    checks.append(
        Check("wal_level", "ok", "logical")
        if level == "logical"
        else Check(
            "wal_level",
            "fail",
            f"{level}, logical decoding needs logical",
            "ALTER SYSTEM SET wal_level = logical; then restart Postgres",
        )
    )
    slots_max = int(_one(conn, "SHOW max_replication_slots"))
    slots_used = int(_one(conn, "SELECT count(*) FROM pg_replication_slots"))
    senders_max = int(_one(conn, "SHOW max_wal_senders"))
    senders_used = int(_one(conn, "SELECT count(*) FROM pg_stat_replication"))
    detail = f"slots {slots_used}/{slots_max}, wal senders {senders_used}/{senders_max}"
    if slots_used >= slots_max or senders_used >= senders_max:
        checks.append(
            Check(
                "replication headroom",
                "warn",
                f"{detail}: none left for a new connector",
                "raise max_replication_slots / max_wal_senders",
            )
        )
    else:
        checks.append(Check("replication headroom", "ok", detail))
    return checks


def _tables(conn: psycopg.Connection[Any], settings: Settings) -> list[Check]:
    checks = []
    tables = (
        (settings.appointments_table, resolve_columns(APPOINTMENT_FIELDS, settings.appointment_columns)),
        (settings.services_table, resolve_columns(SERVICE_FIELDS, settings.service_columns)),
    )
    for table, columns in tables:
        qualified = f"{settings.db_schema}.{table}"
        quoted = (
            sql.SQL("{}.{}").format(sql.Identifier(settings.db_schema), sql.Identifier(table)).as_string(conn)
        )
        ident = _one(
            conn,
            "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (settings.db_schema, table),
        )
        if ident is None:
            checks.append(
                Check(
                    f"table {qualified}",
                    "fail",
                    "does not exist",
                    "check SLOTGUARD_DB_SCHEMA and the table settings",
                )
            )
            continue
        if ident == "f":
            checks.append(Check(f"table {qualified}", "ok", "REPLICA IDENTITY FULL"))
        else:
            kind = {"d": "DEFAULT", "n": "NOTHING", "i": "INDEX"}.get(str(ident), str(ident))
            checks.append(
                Check(
                    f"table {qualified}",
                    "fail",
                    f"REPLICA IDENTITY {kind}: updates and deletes arrive without the old row",
                    f"ALTER TABLE {quoted} REPLICA IDENTITY FULL;",
                )
            )
        found = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (settings.db_schema, table),
            ).fetchall()
        )
        problems = []
        for logical, column in columns.items():
            if column not in found:
                problems.append(f"{logical} -> {column} missing")
            elif found[column] not in _USABLE.get(logical, {found[column]}):
                problems.append(f"{logical} -> {column} is {found[column]}")
        if problems:
            checks.append(
                Check(
                    f"columns of {qualified}",
                    "fail",
                    "; ".join(problems),
                    "fix the column mapping (SLOTGUARD_*_COLUMNS) or the table",
                )
            )
        else:
            checks.append(
                Check(f"columns of {qualified}", "ok", f"{len(columns)} columns the core reads, usable types")
            )
    return checks


def _publication(conn: psycopg.Connection[Any], settings: Settings) -> list[Check]:
    name = settings.publication_name
    if _one(conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (name,)) == 0:
        return [
            Check(
                f"publication {name}",
                "warn",
                "does not exist yet",
                "the connector creates it on its first start (publication.autocreate.mode=filtered)",
            )
        ]
    covered = {
        f"{s}.{t}"
        for s, t in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (name,)
        ).fetchall()
    }
    wanted = {f"{settings.db_schema}.{t}" for t in (settings.appointments_table, settings.services_table)}
    missing = sorted(wanted - covered)
    if missing:
        tables = ", ".join(missing)
        return [
            Check(
                f"publication {name}",
                "fail",
                f"does not cover {tables}",
                f"ALTER PUBLICATION {name} ADD TABLE {tables};",
            )
        ]
    return [Check(f"publication {name}", "ok", f"covers {', '.join(sorted(wanted))}")]


def _stored_position(settings: Settings) -> StoredPosition | None:
    """The connector's stored position: Kafka Connect's offsets when SLOTGUARD_CONNECT_URL is set, else the
    relay's offsets file."""
    if settings.connect_url:
        return connect_position(ConnectClient(settings.connect_url), CONNECTOR_NAME)
    return read_relay_position(offsets_file(settings))


def _slot(conn: psycopg.Connection[Any], settings: Settings, max_retained: int) -> list[Check]:
    name = settings.slot_name
    title = f"replication slot {name}"
    slot = read_slot(conn, name)
    try:
        position = _stored_position(settings)
    except SlotguardError as exc:
        position = None
        checks = [Check("stored position", "warn", str(exc), "check SLOTGUARD_CONNECT_URL")]
    else:
        checks = []
    gap = find_gap(name, position, slot)
    if gap is not None:
        lost = gap.describe().split(". Recover with")[0]
        return [
            *checks,
            Check(title, "fail", lost, "run: slotguard source recover (--dry-run first shows the plan)"),
            *_slot_limits(conn, slot),
        ]
    if slot is None:
        return [
            *checks,
            Check(
                title,
                "fail",
                "does not exist: no change is being captured",
                "start the connector (slotguard connector register) or the relay; it creates the slot",
            ),
        ]
    retained = int(
        _one(
            conn,
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
            (format_lsn(slot.confirmed_flush_lsn or 0),),
        )
        or 0
    )
    mib = retained / (1 << 20)
    checks.append(
        Check(title, "ok", "active")
        if slot.active
        else Check(
            title, "warn", "inactive: nothing reads it, WAL piles up", "start the connector or the relay"
        )
    )
    limit = f"{max_retained / (1 << 20):.0f} MiB"
    if retained > max_retained:
        checks.append(
            Check(
                "retained WAL",
                "fail",
                f"{mib:.1f} MiB, above {limit}",
                "the connector is stuck or gone: fix it, or drop the slot (then replay)",
            )
        )
    elif retained > max_retained // 2:
        checks.append(
            Check(
                "retained WAL",
                "warn",
                f"{mib:.1f} MiB, above half of {limit}",
                "check that the connector keeps up",
            )
        )
    else:
        checks.append(Check("retained WAL", "ok", f"{mib:.1f} MiB (limit {limit})"))
    if conn.info.server_version >= 170000:
        checks.append(
            Check(
                "failover slot",
                "ok",
                "the slot is a failover slot (kept by standbys with sync_replication_slots)",
            )
            if slot.failover
            else Check(
                "failover slot",
                "warn",
                "not a failover slot: a Postgres failover loses it, and with it the change stream",
                f"stop the connector, SELECT pg_drop_replication_slot('{name}'); then slotguard source recover "
                "(it recreates the slot as a failover slot and flushes the gap); on standbys set "
                "sync_replication_slots = on and hot_standby_feedback = on",
            )
        )
    return checks + _slot_limits(conn, slot)


def _slot_limits(conn: psycopg.Connection[Any], slot: SlotState | None) -> list[Check]:
    """Whether Postgres may invalidate the slot (``max_slot_wal_keep_size``), and how near it is."""
    setting = str(_one(conn, "SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"))
    if setting == "-1":
        return [
            Check(
                "max_slot_wal_keep_size", "ok", "-1: Postgres never invalidates the slot (watch retained WAL)"
            )
        ]
    limit_mib = int(setting)
    checks = [
        Check(
            "max_slot_wal_keep_size",
            "warn",
            f"{limit_mib} MiB: a slot that falls that far behind is invalidated, and the stream after it lost",
            "size it for the longest connector outage you want to survive, and alert on retained WAL "
            "(this check fails when the slot nears it)",
        )
    ]
    if slot is None or slot.safe_wal_size is None:
        return checks
    left = slot.safe_wal_size / (1 << 20)
    if slot.wal_status in ("unreserved", "lost") or left < limit_mib * 0.2:
        checks.append(
            Check(
                "slot headroom",
                "fail",
                f"{left:.0f} MiB of WAL left before max_slot_wal_keep_size invalidates the slot "
                f"(wal_status {slot.wal_status})",
                "get the connector streaming now, or raise max_slot_wal_keep_size",
            )
        )
    else:
        checks.append(Check("slot headroom", "ok", f"{left:.0f} MiB of WAL left before the limit"))
    return checks


# --- Kafka -------------------------------------------------------------------------------------------------


def check_kafka(settings: Settings) -> list[Check]:
    try:
        with quiet_kafka_client():
            return asyncio.run(_kafka(settings))
    except Exception as exc:  # the client's errors, whatever their class
        return [
            Check(
                "kafka reachable",
                "fail",
                f"{settings.kafka_bootstrap}: {_clean(exc, settings.kafka_password)}",
                "check SLOTGUARD_KAFKA_BOOTSTRAP and the security settings",
            )
        ]


async def _kafka(settings: Settings) -> list[Check]:
    from aiokafka.admin import AIOKafkaAdminClient

    options = kafka_connection(settings).aiokafka_options()
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=10000)
    await asyncio.wait_for(admin.start(), 15)
    try:
        checks = [Check("kafka reachable", "ok", settings.kafka_bootstrap)]
        existing = set(await admin.list_topics())
        wanted = {
            "CDC topic": settings.appointments_topic,
            "services topic": settings.services_topic,
            "events topic": settings.events_topic,
            "DLQ topic": settings.dlq_topic,
        }
        described = {
            t["topic"]: t for t in await admin.describe_topics([t for t in wanted.values() if t in existing])
        }
        for what, topic in wanted.items():
            if topic not in existing:
                checks.append(Check(f"{what} {topic}", "fail", "missing", "slotguard topics apply"))
            else:
                partitions = len(described.get(topic, {}).get("partitions", []))
                checks.append(Check(f"{what} {topic}", "ok", f"{partitions} partition(s)"))
        checks += await _group(admin, settings, existing, options)
        return checks
    finally:
        await admin.close()


async def _group(admin: Any, settings: Settings, existing: set[str], options: dict[str, Any]) -> list[Check]:
    group = settings.consumer_group
    topic = settings.appointments_topic
    desc = (await admin.describe_consumer_groups([group]))[0]
    state, members = group_state(desc)
    lag_text = ""
    if topic in existing:
        committed, ends = await committed_and_end_offsets(options, group, topic)
        lags = {p: end - (committed.get(p) or 0) for p, end in ends.items()}
        lag_text = ", lag " + " ".join(f"p{p}={lags[p]}" for p in sorted(lags)) if lags else ""
    detail = f"{state}, {len(members)} member(s){lag_text}"
    if not members:
        return [
            Check(f"worker group {group}", "warn", detail, "no worker is running: start slotguard worker")
        ]
    return [Check(f"worker group {group}", "ok", detail)]


# --- Redis -------------------------------------------------------------------------------------------------


def check_redis(settings: Settings, *, sample: int = 200) -> list[Check]:
    try:
        return asyncio.run(_redis(settings, sample))
    except Exception as exc:  # the client's errors, whatever their class
        return [
            Check(
                "redis reachable",
                "fail",
                _clean(exc, settings.redis_url, _password(settings.redis_url)),
                "check SLOTGUARD_REDIS_URL (host, port, password, rediss:// for TLS)",
            )
        ]


async def _redis(settings: Settings, sample: int) -> list[Check]:
    from schemas.redact import redact_url

    conn = redis_connection(settings)
    client = redis_client(conn)
    try:
        if conn.kind == "cluster":
            # The topology first, node by node: a cluster that does not serve every slot answers CLUSTERDOWN
            # to the key-based checks below, and this says why.
            topology = await _cluster(client, conn, settings)
            if any(c.name == "cluster slots" and c.status == "fail" for c in topology):
                return topology
        await client.ping()
        checks = [Check("redis reachable", "ok", redact_url(settings.redis_url))]
        prefix = settings.redis_key_prefix
        probe = f"{prefix}slotguard:doctor:{secrets.token_hex(4)}"
        await client.set(probe, "1", ex=30)
        written = await client.exists(probe)
        await client.unlink(probe)
        checks.append(
            Check("redis probe key", "ok", f"written and removed under prefix {prefix!r}")
            if written
            else Check("redis probe key", "fail", "write did not stick", "check the ACL of the Redis user")
        )
        if conn.kind == "cluster":
            checks += topology
        else:
            checks.append(await _keyspace_events(client, settings))
            if conn.kind == "sentinel":
                checks += await _sentinels(conn, settings)
        head = settings.key_template.split("{", 1)[0]
        pattern = f"{glob_escape(prefix + head)}*"
        found: list[str] = []
        scanned = 0
        async for key in client.scan_iter(match=pattern, count=100):
            found.append(key.decode() if isinstance(key, bytes) else str(key))
            scanned += 1
            if scanned >= sample:
                break
        if found:
            checks.append(
                Check(
                    "cache keys",
                    "ok",
                    f"{len(found)}{'+' if scanned >= sample else ''} key(s) match {pattern!r}, e.g. {found[0]!r}",
                )
            )
        elif await client.dbsize() == 0:
            checks.append(Check("cache keys", "ok", "the cache is empty: nothing to sample yet"))
        else:
            checks.append(
                Check(
                    "cache keys",
                    "warn",
                    f"no key matches {pattern!r}",
                    "your prefix (SLOTGUARD_REDIS_KEY_PREFIX) or template may be wrong -- or the cache is empty",
                )
            )
        return checks
    finally:
        await client.aclose()


async def _keyspace_events(client: Any, settings: Settings, *, where: str = "") -> Check:
    """Whether the keyspace guard can watch fills (docs/worker.md, "Closing the stale-fill race")."""
    from processor.worker.guard import NOTIFY, missing_flags

    name = f"keyspace events{where}"
    if settings.guard_window <= 0:
        return Check(name, "ok", "keyspace guard off (SLOTGUARD_GUARD_WINDOW=0): not needed")
    try:
        current = str((await client.config_get(NOTIFY)).get(NOTIFY, ""))
    except ResponseError:
        return Check(
            name,
            "warn",
            "CONFIG is not allowed here, so notify-keyspace-events cannot be checked",
            "set notify-keyspace-events to include K$m in the server's configuration (managed Redis: its "
            "parameter group); without it only the second delete closes the stale-fill race",
        )
    missing = missing_flags(current)
    if missing:
        return Check(
            name,
            "warn",
            f"notify-keyspace-events is {current!r}, missing {missing!r}",
            "the worker adds them at start (CONFIG SET); if its Redis user may not, set them on the server",
        )
    return Check(name, "ok", f"notify-keyspace-events {current!r}: the keyspace guard can watch fills")


async def _cluster(client: Any, conn: RedisConnection, settings: Settings) -> list[Check]:
    """The cluster as a whole (every slot served), then each primary: its keyspace events, the invalidation's
    rights there (a probe key and the script), and a replica to fail over to."""
    from processor.worker.cluster import ClusterNodes

    nodes = ClusterNodes(client, conn)
    await nodes.ensure()
    # Every primary's own view, the worst counts: a node that dropped slots knows it before the rest do.
    views = [await nodes.client(name).cluster("INFO") for name in nodes.primaries()]
    info = min(views, key=lambda v: (v.get("cluster_state") == "ok", int(v.get("cluster_slots_ok", 0))))
    served = int(info.get("cluster_slots_ok", 0))
    checks = [
        Check("cluster slots", "ok", f"all 16384 served; cluster_state {info.get('cluster_state')}")
        if served == 16384 and info.get("cluster_state") == "ok"
        else Check(
            "cluster slots",
            "fail",
            f"{16384 - served} of 16384 slots not served (cluster_state {info.get('cluster_state')}): keys there "
            "can be neither cached nor invalidated",
            "redis-cli --cluster check HOST:PORT, then --cluster fix (or assign the slots with CLUSTER ADDSLOTS)",
        )
    ]
    wait = redis_wait_replicas(settings)
    for name in nodes.primaries():
        node = nodes.client(name)
        checks.append(await _keyspace_events(node, settings, where=f" on {name}"))
        probe = f"{settings.redis_key_prefix}slotguard:doctor:{nodes.tag(name)}"
        try:
            found = await node.eval(_PROBE, 0, probe)
        except ResponseError as exc:
            checks.append(
                Check(
                    f"primary {name}",
                    "fail",
                    f"the invalidation script cannot run there: {' '.join(str(exc).split())[:200]}",
                    "Redis >= 7 on every node, and the user may run EVAL and write under the key prefix",
                )
            )
            continue
        replicas = int((await node.info("replication")).get("connected_slaves", 0))
        if replicas == 0:
            checks.append(
                Check(
                    f"primary {name}",
                    "warn",
                    "writes and runs the invalidation script, but has no replica: its death loses its slots"
                    + (f", and WAIT for {wait} replica(s) falls back to none" if wait else ""),
                    "give every primary a replica (redis-cli --cluster add-node --cluster-slave)",
                )
            )
        else:
            checks.append(
                Check(
                    f"primary {name}",
                    "ok",
                    f"invalidation script ran ({found}); {replicas} replica(s), WAIT {wait}",
                )
            )
    await nodes.aclose_nodes()
    return checks


#: The doctor's probe on one node: the same kind of script as the invalidation (undeclared keys, flagged).
_PROBE = """#!lua flags=allow-cross-slot-keys
redis.call('SET', ARGV[1], '1', 'EX', 30)
return redis.call('UNLINK', ARGV[1])
"""


async def _sentinels(conn: RedisConnection, settings: Settings) -> list[Check]:
    """The Sentinels' view of the primary: known, not down, with a replica to promote, enough Sentinels."""
    from redis.asyncio.sentinel import Sentinel

    from processor.worker.redis_connect import sentinel_options

    assert conn.master is not None
    kwargs = sentinel_options(conn)
    answering: list[dict[str, Any]] = []
    healthy_replicas = 0
    for host, port in conn.nodes:
        one = Sentinel([(host, port)], sentinel_kwargs=kwargs).sentinels[0]
        try:
            answering.append(dict(await one.sentinel_master(conn.master)))  # type: ignore[arg-type]
            replicas_seen = await one.sentinel_slaves(conn.master)
        except (RedisError, OSError):
            continue
        finally:
            await one.aclose()
        healthy_replicas = max(
            healthy_replicas,
            sum(
                1
                for r in replicas_seen
                if not {"s_down", "o_down", "disconnected"} & set(str(r.get("flags", "")).split(","))
            ),
        )
    if not answering:
        return [
            Check(
                f"sentinel {conn.master}",
                "fail",
                f"none of the {len(conn.nodes)} Sentinel(s) knows a primary named {conn.master!r}",
                "check the Sentinels' addresses and the master name in SLOTGUARD_REDIS_URL",
            )
        ]
    view = answering[0]
    flags = str(view.get("flags", ""))
    replicas = healthy_replicas
    others = int(view.get("num-other-sentinels", 0))
    where = f"{view.get('ip')}:{view.get('port')}"
    checks = [
        Check(
            f"sentinel {conn.master}",
            "ok" if "down" not in flags else "fail",
            f"primary {where} ({flags}); {len(answering)} of {len(conn.nodes)} Sentinel(s) answer, "
            f"{others + 1} watch it (quorum {view.get('quorum')})",
            ""
            if "down" not in flags
            else "the primary is down and not yet failed over: check the Sentinels' logs",
        )
    ]
    if replicas == 0:
        checks.append(
            Check(
                "sentinel replicas",
                "warn",
                "the primary has no replica up: a failover has nothing to promote",
                "add a replica (replicaof the primary); the Sentinels find it by themselves",
            )
        )
    else:
        checks.append(
            Check("sentinel replicas", "ok", f"{replicas} replica(s); WAIT {redis_wait_replicas(settings)}")
        )
    if others + 1 < 3:
        checks.append(
            Check(
                "sentinel quorum",
                "warn",
                f"only {others + 1} Sentinel(s) watch the primary",
                "run three or more Sentinels on separate machines, so a failover needs a majority",
            )
        )
    return checks


# --- all ---------------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Settings], list[Check]]] = {
    "settings": check_settings,
    "postgres": check_postgres,
    "kafka": check_kafka,
    "redis": check_redis,
}


def run_checks(settings: Settings, only: Iterable[str] = CHECKS) -> list[Check]:
    checks: list[Check] = []
    for name in only:
        checks += CHECKS[name](settings)
    return checks


def as_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]
