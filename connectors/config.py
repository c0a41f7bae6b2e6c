"""The Debezium Postgres connector's settings, in one place for the embedded relay and Kafka Connect.

:func:`connector_properties` builds every property both runtimes share -- what to capture, how to name
topics and how to serialise records. The relay (:mod:`connectors.relay`) adds only the embedded engine's
offset storage; the renderer (:mod:`connectors.render`) adds only Connect's connector name, ``tasks.max``
and topic creation. Because the converter properties are shared too, the relay's records are the bytes
Kafka Connect would write: Debezium's embedded engine reads ``key.converter.*`` / ``value.converter.*``
exactly as a Connect worker does.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.errors import DatabaseUrlError


class ConnectorSettings(Protocol):
    """What the connector's properties are made of: the narrow view of the settings this package reads.

    The composition root's ``slotguard.settings.Settings`` satisfies it; tests may pass anything that does.
    """

    @property
    def topic_prefix(self) -> str: ...
    @property
    def db_schema(self) -> str: ...
    @property
    def appointments_table(self) -> str: ...
    @property
    def services_table(self) -> str: ...
    @property
    def appointments_topic(self) -> str: ...
    @property
    def services_topic(self) -> str: ...
    @property
    def slot_name(self) -> str: ...
    @property
    def publication_name(self) -> str: ...
    @property
    def heartbeat_interval_ms(self) -> int: ...
    @property
    def poll_interval_ms(self) -> int: ...
    @property
    def heartbeat_action_query(self) -> str: ...


#: Name of the Connect connector, and of the embedded engine (Debezium keys stored offsets by it).
CONNECTOR_NAME = "slotguard-appointments"

#: Kafka Connect's JSON converter, used for keys and values.
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"

#: THE one switch for JsonConverter's ``schemas.enable`` (keys and values, relay and Connect alike).
#: False: a record is the bare Debezium envelope ``{"before":..., "after":..., "op":...}`` and a key is
#: ``{"id": 1}``; the worker's models describe the columns, so the inline Connect schema would only
#: multiply every record's size.
SCHEMAS_ENABLE = False

#: Partitions of the change topics when slotguard (or Connect's topic creation) makes them. One
#: partition keeps every table's changes in commit order, which the worker's batching relies on least
#: but a human reading the topic most.
TOPIC_PARTITIONS = 1

#: Debezium's default heartbeat topic prefix, set explicitly so :func:`heartbeat_topic` cannot drift.
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"

#: Prefix of the logical decoding messages :attr:`ConnectorSettings.heartbeat_action_query` writes by
#: default; excluded, so they move the slot without becoming records.
HEARTBEAT_MESSAGE_PREFIX = "slotguard-heartbeat"

#: ``initial`` snapshot, but only of ``services``: the worker's event-type table wants every service,
#: while an appointments snapshot would be read records (op=r) the worker ignores anyway.
SNAPSHOT_MODE = "initial"


class PostgresTarget(BaseModel):
    """Where the connector connects: the ``database.*`` properties, parsed from a DSN or fixed for deploys."""

    model_config = ConfigDict(frozen=True)

    hostname: str = Field(min_length=1)
    port: int | str = 5432  # a str only for a Connect placeholder
    user: str = Field(min_length=1)
    password: SecretStr = SecretStr("")
    dbname: str = Field(min_length=1)
    sslmode: str | None = None


def parse_database_url(url: SecretStr | str | None) -> PostgresTarget:
    """Parse ``postgresql://user:pass@host:port/db[?sslmode=...]`` into a :class:`PostgresTarget`.

    Raises :class:`DatabaseUrlError` naming what is wrong, never echoing the URL (it holds the password).
    """
    if url is None:
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL is not set; the relay needs the Postgres DSN")
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL must start with postgresql://")
    try:
        port = parts.port or 5432
    except ValueError:
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL has an invalid port") from None
    if not parts.hostname:
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL has no host (Unix sockets are not supported)")
    if not parts.username:
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL has no user")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise DatabaseUrlError("SLOTGUARD_DATABASE_URL has no database name")
    sslmode = parse_qs(parts.query).get("sslmode", [None])[-1]
    return PostgresTarget(
        hostname=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=SecretStr(unquote(parts.password or "")),
        dbname=dbname,
        sslmode=sslmode,
    )


def captured_tables(settings: ConnectorSettings) -> list[str]:
    """The ``schema.table`` names the connector captures, appointments first."""
    return [
        f"{settings.db_schema}.{settings.appointments_table}",
        f"{settings.db_schema}.{settings.services_table}",
    ]


def heartbeat_topic(settings: ConnectorSettings) -> str:
    """The topic Debezium writes heartbeats to: ``__debezium-heartbeat.<topic prefix>``."""
    return f"{HEARTBEAT_TOPIC_PREFIX}.{settings.topic_prefix}"


def change_topics(settings: ConnectorSettings) -> list[str]:
    """Every topic the connector writes: appointments, services, heartbeats."""
    return [settings.appointments_topic, settings.services_topic, heartbeat_topic(settings)]


def converter_properties() -> dict[str, str]:
    """JsonConverter for keys and values, with :data:`SCHEMAS_ENABLE` -- honoured by Connect and the engine."""
    enabled = "true" if SCHEMAS_ENABLE else "false"
    return {
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": enabled,
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": enabled,
    }


def connector_properties(settings: ConnectorSettings, target: PostgresTarget) -> dict[str, str]:
    """The properties the relay and Kafka Connect share: source, capture, topics, serialisation.

    ``target.password`` is written as given: the real password for the relay, a placeholder for Connect.
    """
    tables = captured_tables(settings)
    props = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": target.hostname,
        "database.port": str(target.port),
        "database.user": target.user,
        "database.password": target.password.get_secret_value(),
        "database.dbname": target.dbname,
        "topic.prefix": settings.topic_prefix,
        "slot.name": settings.slot_name,
        "publication.name": settings.publication_name,
        # Debezium creates (and keeps in step) a publication for exactly the captured tables.
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(tables),
        "snapshot.mode": SNAPSHOT_MODE,
        "snapshot.include.collection.list": tables[1],
        # A delete is followed by a tombstone (null value) so compacted topics drop the row.
        "tombstones.on.delete": "true",
        "heartbeat.interval.ms": str(settings.heartbeat_interval_ms),
        # Debezium's default (500 ms) is added to every change's latency when the table is quiet.
        "poll.interval.ms": str(settings.poll_interval_ms),
        "topic.heartbeat.prefix": HEARTBEAT_TOPIC_PREFIX,
        "message.prefix.exclude.list": HEARTBEAT_MESSAGE_PREFIX,
        # On Postgres >= 17 the slot is a failover slot: a standby with sync_replication_slots keeps it, so
        # a failover does not lose the stream (ignored before 17).
        "slot.failover": "true",
        # Compare the stored offset with the slot at start: a slot recreated behind the connector's back
        # (its WAL from the offset on gone) stops the connector instead of skipping the gap in silence.
        "offset.mismatch.strategy": "trust_offset",
        **converter_properties(),
    }
    if settings.heartbeat_action_query:
        # Without it an idle captured table never moves the slot: Debezium confirms LSNs on events only.
        props["heartbeat.action.query"] = settings.heartbeat_action_query
    if target.sslmode:
        props["database.sslmode"] = target.sslmode
    return props
