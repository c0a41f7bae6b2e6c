"""``slotguard topics apply``: the declared topics (connectors/topics.yaml) against the cluster.

Missing topics are created with their partitions, replication and configs. Existing ones are compared and
drift is reported; they are changed only with ``alter=True`` (more partitions, different configs --
never fewer partitions, which Kafka cannot do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from schemas.errors import ConfigError, DependencyError
from slotguard.settings import Settings

ROLES = ("appointments", "services", "events", "dlq")


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicReport:
    spec: TopicSpec
    action: str  # "create" | "ok" | "drift" | "alter"
    differences: list[str] = field(default_factory=list)
    #: Declared configs the broker did not report (cannot be compared; the local tansu broker reports none).
    unverified: list[str] = field(default_factory=list)


def default_file() -> Path:
    import connectors

    return Path(connectors.__file__).with_name("topics.yaml")


def load_specs(path: Path, settings: Settings) -> list[TopicSpec]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict) or not isinstance(document.get("topics"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'topics' mapping")
    names = {
        "appointments": settings.appointments_topic,
        "services": settings.services_topic,
        "events": settings.events_topic,
        "dlq": settings.dlq_topic,
    }
    defaults = document.get("defaults") or {}
    specs = []
    for role, body in document["topics"].items():
        if role not in names:
            raise ConfigError(f"{path}: unknown topic role {role!r} (known: {', '.join(ROLES)})")
        body = body or {}
        try:
            partitions = int(body.get("partitions", 1))
            replication = int(body.get("replication_factor", defaults.get("replication_factor", 1)))
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {role}: partitions and replication_factor must be integers") from None
        if partitions < 1 or replication < 1:
            raise ConfigError(f"{path}: {role}: partitions and replication_factor must be at least 1")
        config = {str(k): str(v) for k, v in (body.get("config") or {}).items()}
        specs.append(TopicSpec(role, names[role], partitions, replication, config))
    return specs


async def apply(
    options: dict[str, Any], specs: list[TopicSpec], *, dry_run: bool, alter: bool
) -> list[TopicReport]:
    """Create, compare and (with ``alter``) change; the client's errors become one DependencyError line."""
    try:
        return await _apply(options, specs, dry_run=dry_run, alter=alter)
    except KafkaError as exc:  # IncompatibleBrokerVersion (an API the broker lacks) is one too
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DependencyError(f"Kafka refused a topic change: {text}") from None


async def _apply(
    options: dict[str, Any], specs: list[TopicSpec], *, dry_run: bool, alter: bool
) -> list[TopicReport]:
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=15000)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster()).get("brokers", ())) or 1
        existing = set(await admin.list_topics())
        reports: list[TopicReport] = []
        present = [s for s in specs if s.name in existing]
        described = (
            {t["topic"]: t for t in await admin.describe_topics([s.name for s in present])} if present else {}
        )
        configs = await _configs(admin, [s.name for s in present])
        for spec in specs:
            replicas = min(spec.replication_factor, brokers)
            if spec.name not in existing:
                reports.append(
                    TopicReport(spec, "create", [f"{spec.partitions} partition(s), {replicas} replica(s)"])
                )
                if not dry_run:
                    await admin.create_topics(
                        [NewTopic(spec.name, spec.partitions, replicas, topic_configs=spec.config)]
                    )
                continue
            diffs: list[str] = []
            have = len(described.get(spec.name, {}).get("partitions", []))
            if have != spec.partitions:
                diffs.append(f"partitions {have} -> {spec.partitions}")
            current = configs.get(spec.name, {})
            unverified = sorted(k for k in spec.config if k not in current)
            changed = {k: v for k, v in spec.config.items() if k in current and current[k] != v}
            diffs += [f"{k} {current[k]} -> {v}" for k, v in changed.items()]
            if not diffs:
                reports.append(TopicReport(spec, "ok", unverified=unverified))
                continue
            reports.append(TopicReport(spec, "alter" if alter else "drift", diffs, unverified))
            if alter and not dry_run:
                if have > spec.partitions:
                    raise ConfigError(
                        f"{spec.name} has {have} partitions; Kafka cannot shrink a topic to {spec.partitions}"
                    )
                if have < spec.partitions:
                    await admin.create_partitions({spec.name: NewPartitions(spec.partitions)})
                if changed:
                    await admin.alter_configs(
                        [
                            ConfigResource(
                                ConfigResourceType.TOPIC, spec.name, configs={**current, **spec.config}
                            )
                        ]
                    )
        return reports
    finally:
        await admin.close()


async def _configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name = resource[3]
            entries = resource[4]
            found[name] = {str(e[0]): str(e[1]) for e in entries if e[1] is not None}
    return found
