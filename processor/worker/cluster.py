"""Redis Cluster specifics: which node holds what, and a client of each node.

redis-py's cluster client knows the slot map (:meth:`~redis.asyncio.cluster.RedisCluster.get_node_from_key`)
and routes single-slot commands, redirections included. Two things it cannot express, and these per-node
clients do: a batch's deletes on one node as *one* script call (keys of many slots on one node; Redis 7's
``allow-cross-slot-keys``), and ``WAIT`` on the connection that sent them -- WAIT counts the replicas that
have *that connection's* writes, and the cluster client spreads a node's commands over a pool.

A key that moved since the slot map was read (a resharding, a failover) fails its node's script ("non
local key", MOVED); the batch fails as a whole, the slot map is read again, and the failure policy retries
the batch -- idempotent deletes, so nothing is lost and the offset is committed only after every node
acknowledged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from processor.worker.redis_connect import node_client
from schemas.connections import RedisConnection


class ClusterNodes:
    """The cluster's primaries: a client of each, and keys grouped by the primary that holds them."""

    def __init__(self, cluster: RedisCluster, conn: RedisConnection) -> None:
        self.cluster = cluster
        self._conn = conn
        self._clients: dict[str, aioredis.Redis] = {}
        self._ready = False
        #: node name -> a hash tag whose slot that node serves (per-node keys: the second-delete schedule).
        self._tags: dict[str, str] = {}

    async def refresh(self) -> None:
        """Read the slot map again (after a failure, which may mean a resharding or a failover).

        redis-py's cluster errors are not ``RedisError``s; they become one here (``ConnectionError``), so
        every caller handles one family."""
        try:
            if not self._ready:
                await self.cluster.initialize()
                self._ready = True
            else:
                await self.cluster.nodes_manager.initialize()
        except RedisClusterException as exc:
            raise RedisConnectionError(f"cannot read the cluster's slot map: {exc}") from exc
        self._tags.clear()

    async def ensure(self) -> None:
        if not self._ready:
            await self.refresh()

    def group(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """``keys`` by the name (``host:port``) of the primary serving their slot."""
        groups: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            try:
                node = self.cluster.get_node_from_key(key)
            except RedisClusterException:  # SlotNotCoveredError: no primary serves the key's slot now
                raise LookupError(f"no primary serves the slot of {key[:100]!r}") from None
            assert node is not None
            groups[node.name].append(key)
        return groups

    def primaries(self) -> list[str]:
        return [node.name for node in self.cluster.get_primaries()]

    def client(self, name: str, *, socket_timeout: float | None = 5.0) -> Any:
        """A client of the node ``name`` (kept; one per node)."""
        key = f"{name}/{socket_timeout}"
        found = self._clients.get(key)
        if found is None:
            host, _, port = name.rpartition(":")
            found = node_client(self._conn, host, int(port), socket_timeout=socket_timeout)
            self._clients[key] = found
        return found

    def tag(self, name: str) -> str:
        """A hash tag (``{n}``) whose slot the node ``name`` serves: keys that must live on that node."""
        found = self._tags.get(name)
        if found is None:
            for i in range(1 << 20):  # a primary serves a third of the slots: found in a few tries
                candidate = "{" + str(i) + "}"
                try:
                    node = self.cluster.get_node_from_key(candidate)
                except RedisClusterException:  # a slot nobody serves: try the next tag
                    continue
                if node is not None and node.name == name:
                    found = candidate
                    break
            else:
                raise LookupError(f"no slot is served by {name}")
            self._tags[name] = found
        return found

    async def aclose_nodes(self) -> None:
        """Close the per-node clients (the cluster client stays open)."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def aclose(self) -> None:
        await self.aclose_nodes()
        await self.cluster.aclose()
