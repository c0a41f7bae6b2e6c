"""Where the test servers come from: the local stack (default), servers named by env vars, or Docker.

* default: the same code as ``slotguard dev up --infra-only``, under a private temporary directory.
* ``SLOTGUARD_TEST_DATABASE_URL`` + ``SLOTGUARD_TEST_KAFKA_BOOTSTRAP`` + ``SLOTGUARD_TEST_REDIS_URL`` all
  set: use those servers, start nothing.
* ``SLOTGUARD_TEST_BACKEND=docker``: testcontainers (not a dependency; imported only on this path).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from slotguard.dev.stack import DevStack

ENV_DATABASE = "SLOTGUARD_TEST_DATABASE_URL"
ENV_KAFKA = "SLOTGUARD_TEST_KAFKA_BOOTSTRAP"
ENV_REDIS = "SLOTGUARD_TEST_REDIS_URL"
ENV_BACKEND = "SLOTGUARD_TEST_BACKEND"


@dataclass(frozen=True)
class Servers:
    database_url: str
    kafka_bootstrap: str
    redis_url: str
    backend: str  # "local", "external" or "docker"


def choose_backend() -> str:
    names = (ENV_DATABASE, ENV_KAFKA, ENV_REDIS)
    given = [name for name in names if os.environ.get(name)]
    if given and len(given) < len(names):
        missing = ", ".join(sorted(set(names) - set(given)))
        raise RuntimeError(f"{', '.join(given)} set but {missing} not: set all three or none")
    if given:
        return "external"
    backend = os.environ.get(ENV_BACKEND, "local")
    if backend not in ("local", "docker"):
        raise RuntimeError(f"{ENV_BACKEND}={backend!r}: expected 'local' or 'docker'")
    return backend


@contextmanager
def local_servers(base: Path) -> Iterator[Servers]:
    stack = DevStack(base)
    try:
        info = stack.up(infra_only=True).info
        yield Servers(info.database_url, info.kafka_bootstrap, info.redis_url, "local")
    finally:
        stack.down()


@contextmanager
def external_servers() -> Iterator[Servers]:
    yield Servers(os.environ[ENV_DATABASE], os.environ[ENV_KAFKA], os.environ[ENV_REDIS], "external")


@contextmanager
def docker_servers() -> Iterator[Servers]:  # pragma: no cover - needs a Docker engine; not run in CI
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    from slotguard.dev.postgres import apply_schema

    postgres = PostgresContainer(
        "postgres:17", username="postgres", password="postgres", dbname="slotguard"
    ).with_command("postgres -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20")
    kafka = KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft()
    redis = RedisContainer("redis:7")
    with postgres, kafka, redis:
        database_url = postgres.get_connection_url(driver=None)
        apply_schema(database_url)
        redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
        yield Servers(database_url, kafka.get_bootstrap_server(), redis_url, "docker")
