"""``slotguard flush`` on a real Redis: counted first, scoped to a company or branch, never touching slotguard's
own state, rate-limited, and resumable -- killed with ``kill -9`` mid-way, the same command finishes the job
from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from slotguard.settings import Settings, settings_to_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SLOTGUARD = Path(sys.executable).parent / "slotguard"


@pytest.fixture
def cache(dev_stack: Any, unique_name: Any) -> Iterator[tuple[Settings, redis.Redis]]:
    prefix = f"{unique_name('flush')}:"
    settings: Settings = dev_stack.settings(redis_key_prefix=prefix)
    client = redis.Redis.from_url(dev_stack.redis_url, decode_responses=True)
    try:
        yield settings, client
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


def _keys(prefix: str, company: int, branch: int | str, hours: int) -> list[str]:
    return [
        f"{prefix}cal_slots_{company}_{branch}_123_2031-01-{1 + h // 24:02d}-{h % 24:02d}_2031-01-{1 + h // 24:02d}-{h % 24:02d}"
        for h in range(hours)
    ]


def _fill(client: redis.Redis, keys: list[str]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.set(key, "[]")
        pipe.execute()


def _run(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SLOTGUARD), "flush", *args],
        env={**os.environ, **settings_to_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_company_flush_deletes_that_company_only_and_never_slotguards_own_keys(
    cache: tuple[Settings, redis.Redis],
) -> None:
    settings, client = cache
    prefix = settings.redis_key_prefix
    mine = _keys(prefix, 15, 1, 30) + _keys(prefix, 15, "", 5)  # a null branch renders empty
    others = _keys(prefix, 150, 1, 30) + _keys(prefix, 1, 1, 30)  # 15 must not match 150 or 1
    own = [f"{prefix}slotguard:second-deletes", f"{prefix}slotguard:handling:g"]
    _fill(client, mine + others + own)

    counted = _run(settings, "--company", "15", "--dry-run")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith(f"{len(mine)} key(s) match"), counted.stdout
    assert client.exists(*mine) == len(mine)

    done = _run(settings, "--company", "15", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"flushed {len(mine)} key(s)" in done.stdout
    assert client.exists(*mine) == 0
    assert client.exists(*others) == len(others)

    branch = _run(settings, "--company", "150", "--branch", "1", "--yes")
    assert branch.returncode == 0, branch.stderr
    assert client.exists(*others[:30]) == 0
    assert client.exists(*others[30:]) == 30

    everything = _run(settings, "--all", "--yes")
    assert everything.returncode == 0, everything.stderr
    assert client.exists(*others) == 0
    assert client.exists(*own) == len(own)


def test_an_unsafe_tenant_id_is_refused_before_it_becomes_a_pattern(
    cache: tuple[Settings, redis.Redis],
) -> None:
    settings, _ = cache
    result = _run(settings, "--company", "1*", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("slotguard flush: error: company '1*'"), (
        result.stderr
    )


def test_without_yes_and_without_a_terminal_it_counts_and_refuses(
    cache: tuple[Settings, redis.Redis],
) -> None:
    settings, client = cache
    keys = _keys(settings.redis_key_prefix, 7, 1, 3)
    _fill(client, keys)
    result = _run(settings, "--all")
    assert result.returncode == 2
    assert "add --yes" in result.stderr
    assert client.exists(*keys) == 3


def test_a_flush_killed_mid_way_goes_on_from_its_checkpoint(cache: tuple[Settings, redis.Redis]) -> None:
    settings, client = cache
    keys = _keys(settings.redis_key_prefix, 9, 1, 3000) + _keys(settings.redis_key_prefix, 9, 2, 3000)
    _fill(client, keys)
    slow = {"SLOTGUARD_FLUSH_RATE": "1000", "SLOTGUARD_FLUSH_CHUNK": "100"}
    proc = subprocess.Popen(
        [str(SLOTGUARD), "flush", "--all", "--yes"],
        env={**os.environ, **settings_to_env(settings), **slow},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = f"{settings.redis_key_prefix}slotguard:flush:"

    def deleted_so_far() -> int | None:
        for name in client.scan_iter(match=f"{checkpoint}*"):
            done = int(client.hget(name, "deleted") or 0)
            return done if done >= 1000 else None
        return None

    try:
        wait_until(deleted_so_far, timeout=60, what="the flush to checkpoint 1,000 deleted keys")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = client.exists(*keys)
    assert 0 < left < len(keys), f"{left} of {len(keys)} keys left after the kill"

    resumed = _run(settings, "--all", "--yes", SLOTGUARD_FLUSH_RATE="1000000")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed an interrupted flush" in resumed.stdout, resumed.stdout
    assert client.exists(*keys) == 0
    assert not list(client.scan_iter(match=f"{checkpoint}*")), "the checkpoint outlived the flush"
