"""The one place a Redis client is made, for each kind of deployment :class:`RedisConnection` describes:
redis-py's own client for one server, its Sentinel-managed primary, and its cluster client."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from schemas.connections import RedisConnection

#: What each kind of client is: a plain client and a Sentinel's primary speak to one node at a time.
AnyRedis = aioredis.Redis | RedisCluster


def redis_client(conn: RedisConnection, *, socket_timeout: float | None = 5.0) -> Any:
    """A client of the cache ``conn`` names. Short timeouts: a hung Redis must surface as an error the
    failure policy retries, not as a stuck batch (``socket_timeout=None`` for subscriptions, idle between
    messages)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 10,
    }
    if conn.kind == "single":
        if conn.ca_file and conn.tls:
            options["ssl_ca_certs"] = conn.ca_file
        return aioredis.Redis.from_url(conn.url.get_secret_value(), **options)
    auth: dict[str, Any] = {
        "username": conn.username,
        "password": conn.password.get_secret_value() if conn.password else None,
    }
    if conn.tls:
        auth["ssl"] = True
        if conn.ca_file:
            auth["ssl_ca_certs"] = conn.ca_file
    if conn.kind == "cluster":
        # A slot without a primary fails the commands for its keys (retried), not the whole client: the
        # server decides whether the rest serves (cluster-require-full-coverage), and doctor can say which.
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in conn.nodes],
            require_full_coverage=False,
            **options,
            **auth,
        )
    sentinel = Sentinel(list(conn.nodes), sentinel_kwargs=sentinel_options(conn), **options, **auth)
    assert conn.master is not None
    return sentinel.master_for(conn.master, redis_class=aioredis.Redis, db=conn.db)


def sentinel_options(conn: RedisConnection) -> dict[str, Any]:
    """How to speak to the Sentinels themselves (their password, TLS as the data nodes'): the worker's
    client and doctor both ask them."""
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    if conn.sentinel_password is not None:
        options["password"] = conn.sentinel_password.get_secret_value()
    if conn.tls:
        options["ssl"] = True
        if conn.ca_file:
            options["ssl_ca_certs"] = conn.ca_file
    return options


def node_client(conn: RedisConnection, host: str, port: int, *, socket_timeout: float | None = 5.0) -> Any:
    """A client of one node of ``conn``'s cluster (same user, password and TLS)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "username": conn.username,
        "password": conn.password.get_secret_value() if conn.password else None,
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "health_check_interval": 10,
    }
    if conn.tls:
        options["ssl"] = True
        if conn.ca_file:
            options["ssl_ca_certs"] = conn.ca_file
    return aioredis.Redis(**options)
