"""The worker's Redis connections pack commands with hiredis, byte for byte as redis-py would."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from processor.worker.invalidator import hiredis_packing, redis_client

PLAIN = Connection()
PACKED = hiredis_packing(Connection)()


def test_the_client_packs_with_hiredis_over_plain_and_tls_connections() -> None:
    for url, base in (("redis://127.0.0.1:1/0", Connection), ("rediss://127.0.0.1:1/0", SSLConnection)):
        cls = redis_client(url).connection_pool.connection_class
        assert issubclass(cls, base)
        assert cls is not base


@pytest.mark.parametrize(
    "args",
    [
        (
            "EVAL",
            "return 1",
            3,
            "sched",
            "cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
            "k2",
            "chan",
            "",
            "12.5",
        ),
        ("UNLINK", *(f"cal_slots_{i}_1_2_2025-10-15-{i % 24:02d}" for i in range(1000))),
        ("CONFIG SET", "notify-keyspace-events", "K$m"),
        (b"CLIENT SETNAME", b"slotguard"),
        ("SET", "k", b"\x00\xff bytes", "EX", 300),
        ("ZADD", "sched", 1.5, "member"),  # a float: redis-py's packer
        ("SET", "ключ", "значение"),
    ],
)
def test_packed_bytes_equal_redis_py(args: tuple[Any, ...]) -> None:
    assert b"".join(PACKED.pack_command(*args)) == b"".join(PLAIN.pack_command(*args))


@given(st.lists(st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**63 - 1)), max_size=20))
def test_any_str_bytes_int_arguments_pack_alike(rest: list[Any]) -> None:
    args = ("UNLINK", *rest)
    assert b"".join(PACKED.pack_command(*args)) == b"".join(PLAIN.pack_command(*args))


def test_a_bool_is_refused_as_redis_py_refuses_it() -> None:
    with pytest.raises(DataError):
        PACKED.pack_command("SET", "k", True)
