"""Leased fills: closing the stale-fill race for readers that can change one line.

The race: a reader misses the cache, reads availability (slot free), the booking commits, slotguard deletes
the keys -- and *then* the slow reader writes its stale answer, stale until the TTL. With a lease the reader
asks for a token on a miss and may write only while its token is still the key's lease; the worker's
invalidation deletes the keys and their leases in one atomic step, so a fill that started before the
invalidation can never land after it. Three Lua scripts (atomic on the Redis server):

* ``GET_OR_LEASE``: the value, or records the reader's fresh random token as the key's lease (a later miss
  takes the lease over);
* ``PUT_IF_LEASED``: ``SET key value EX ttl`` only if the token is still the key's lease; drops the lease;
* ``INVALIDATE``: ``UNLINK`` every key and its lease.

:class:`LeasedCache` is the reader's helper; docs/leases.md has the same protocol as a Laravel cache store.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

#: The lease of ``key`` lives under ``key`` + this suffix. On a Redis Cluster a key and its lease share a
#: slot only when the key carries a hash tag (a template with ``{{{company}}}``): the scripts below touch
#: the key and its lease together, and a script's keys must share a slot there.
LEASE_SUFFIX = ":slotguard-lease"

#: ARGV[1]: the lease's lifetime (ms); ARGV[2]: the reader's fresh random token (no shared counter: on a
#: cluster it would sit in another slot than the key).
GET_OR_LEASE = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
return {0, ARGV[2]}
"""

PUT_IF_LEASED = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

INVALIDATE = """
local n = 0
for i = 1, #KEYS do
  n = n + redis.call('UNLINK', KEYS[i], KEYS[i] .. ARGV[1])
end
return n
"""


class LeasedCache:
    """A read-through cache whose fills cannot land after an invalidation (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, *, lease_ms: int = 10_000) -> None:
        self._client = client
        self._lease_ms = lease_ms
        self._get = client.register_script(GET_OR_LEASE)
        self._put = client.register_script(PUT_IF_LEASED)

    async def get_or_lease(self, key: str) -> tuple[bytes | None, str | None]:
        """``(value, None)`` on a hit, ``(None, token)`` on a miss."""
        fresh = secrets.token_hex(16)
        hit, payload = await self._get(keys=[key, key + LEASE_SUFFIX], args=[self._lease_ms, fresh])
        if int(hit) == 1:
            return bytes(payload) if not isinstance(payload, bytes) else payload, None
        token = payload.decode() if isinstance(payload, bytes) else str(payload)
        return None, token

    async def put(self, key: str, token: str, value: bytes | str, ttl_s: int) -> bool:
        """Store ``value`` if ``token`` is still the key's lease; False when it was revoked or taken over."""
        return bool(await self._put(keys=[key, key + LEASE_SUFFIX], args=[token, value, ttl_s]))

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[bytes | str]], ttl_s: int = 300
    ) -> bytes | str:
        """The cached value, or ``compute()``'s -- stored only if no invalidation came in between."""
        value, token = await self.get_or_lease(key)
        if value is not None:
            return value
        fresh = await compute()
        assert token is not None
        await self.put(key, token, fresh, ttl_s)
        return fresh


async def invalidate(client: aioredis.Redis, keys: Sequence[str]) -> int:
    """UNLINK ``keys`` and revoke their leases in one atomic step; the number of keys and leases removed."""
    if not keys:
        return 0
    return int(await client.eval(INVALIDATE, len(keys), *keys, LEASE_SUFFIX))
