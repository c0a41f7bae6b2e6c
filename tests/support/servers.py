"""pytest fixtures that run slotguard's tests against real Postgres, Kafka (protocol) and Redis.

Register with ``pytest_plugins = ["tests.support.servers"]``. Servers start once per session,
lazily (a run of unit tests starts nothing); isolation between tests comes from names, not from restarts:
a fresh database per test (copied from a template holding the reference schema), unique topic / slot /
group names, and a unique Redis key prefix. A server that cannot start fails the tests that need it, with
the reason and the server's log tail -- it never skips them.
"""

from __future__ import annotations

import itertools
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from connectors.java import JavaRuntime, find_java
from schemas.errors import SlotguardError
from slotguard.dev.errors import ServerStartError
from slotguard.dev.kafka import BROKER_SETTINGS, create_topic
from slotguard.dev.parts import free_port
from slotguard.dev.postgres import apply_schema, create_database, drop_database
from slotguard.settings import Settings
from tests.support.backends import (
    Servers,
    choose_backend,
    docker_servers,
    external_servers,
    local_servers,
)

__all__ = ["DevStackHandle"]


class _StackSettings(Settings):
    """Settings built only from explicit values: a developer's exported SLOTGUARD_* never leaks into a test."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


class DevStackHandle:
    """The servers of this test session (the ``dev_stack`` fixture)."""

    def __init__(self, servers: Servers, data_dir: Path, template: str) -> None:
        self.database_url = servers.database_url
        self.kafka_bootstrap = servers.kafka_bootstrap
        self.redis_url = servers.redis_url
        self.backend = servers.backend
        self.data_dir = data_dir
        #: database holding the reference schema + demo services, copied by ``fresh_database``
        self.template_database = template
        self._settings_counter = itertools.count(1)

    @property
    def server_url(self) -> str:
        """The maintenance database (for CREATE/DROP DATABASE)."""
        return with_database(self.database_url, "postgres")

    @cached_property
    def java(self) -> JavaRuntime:
        return find_java(None)

    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing at this stack, tuned for tests; ``overrides`` win.

        Each call gets its own ``data_dir`` (relay offsets never leak between tests) and a free ``web_port``.
        The environment is not read.
        """
        data_dir = self.data_dir / "settings" / str(next(self._settings_counter))
        data_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "redis_url": self.redis_url,
            **BROKER_SETTINGS,
            "data_dir": data_dir,
            "web_port": free_port(),
            "log_level": "DEBUG",
        }
        values.update(overrides)
        return _StackSettings(**values)


def _servers(base: Path) -> AbstractContextManager[Servers]:
    backend = choose_backend()
    if backend == "external":
        return external_servers()
    if backend == "docker":
        return docker_servers()
    return local_servers(base)


def _create_template(server_url: str, name: str) -> None:
    create_database(server_url, name)
    apply_schema(with_database(server_url, name))
    with psycopg.connect(server_url, autocommit=True) as conn:
        # Nobody may connect to the template: CREATE DATABASE ... TEMPLATE fails while anyone is connected.
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )


def _drop_template(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
    drop_database(server_url, name)


@pytest.fixture(scope="session")
def dev_stack() -> Iterator[DevStackHandle]:
    """Postgres, Kafka (tansu) and Redis for the whole session; stopped (and their files removed) at the end."""
    base = Path(tempfile.mkdtemp(prefix="slotguard-test-"))
    base.chmod(0o755)  # Postgres runs as an unprivileged user that must reach its data directory
    try:
        try:
            servers_cm = _servers(base)
            servers = servers_cm.__enter__()
        except ServerStartError as exc:
            pytest.fail(f"dev_stack: {exc.detailed()}", pytrace=False)
        except (SlotguardError, RuntimeError, ImportError) as exc:
            pytest.fail(f"dev_stack: cannot start the test servers: {exc}", pytrace=False)
        try:
            template = f"slotguard_tpl_{secrets.token_hex(3)}"
            handle = DevStackHandle(servers, base / "session", template)
            handle.data_dir.mkdir()
            _create_template(handle.server_url, template)
            try:
                yield handle
            finally:
                with suppress(psycopg.Error):
                    _drop_template(handle.server_url, template)
        finally:
            servers_cm.__exit__(None, None, None)
    finally:
        shutil.rmtree(base, ignore_errors=True)


_UNSAFE = re.compile(r"[^a-z0-9_]+")


def _slug(text: str, limit: int) -> str:
    return _UNSAFE.sub("_", text.lower()).strip("_")[:limit].strip("_")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory: ``unique_name("orders")`` -> ``orders_<test name>_<6 random>``, [a-z0-9_], <= 63 chars."""
    test = _slug(request.node.name.removeprefix("test_"), 24) or "test"

    def make(hint: str) -> str:
        return f"{_slug(hint, 24) or 'x'}_{test}_{secrets.token_hex(3)}"

    return make


@pytest.fixture
def fresh_database(dev_stack: DevStackHandle, unique_name: Callable[[str], str]) -> Iterator[str]:
    """URL of a new database with the reference schema and demo services; dropped (slots too) afterwards."""
    name = unique_name("db")
    create_database(dev_stack.server_url, name, template=dev_stack.template_database)
    try:
        yield with_database(dev_stack.database_url, name)
    finally:
        drop_database(dev_stack.server_url, name)


@pytest.fixture
def pg(fresh_database: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to ``fresh_database``."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def kafka_topic(dev_stack: DevStackHandle, unique_name: Callable[[str], str]) -> Callable[..., str]:
    """Factory: ``kafka_topic("changes", partitions=1)`` creates a unique topic and returns its name."""

    def make(hint: str, partitions: int = 1) -> str:
        name = unique_name(hint)
        create_topic(dev_stack.kafka_bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix no other test uses; tests isolate by prefix instead of flushing."""
    return f"sgtest_{secrets.token_hex(4)}:"


@pytest.fixture
def redis_client(dev_stack: DevStackHandle, key_prefix: str) -> Iterator[redis.Redis]:
    """A client (decode_responses=True); keys under ``key_prefix`` are deleted afterwards."""
    client = redis.Redis.from_url(dev_stack.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        with suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{key_prefix}*", count=500))
            if keys:
                client.unlink(*keys)
        client.close()
