"""Commit → key gone, end to end on a running stack (relay and worker), at a fixed rate of changes.

An open-loop load generator commits booking changes -- 60 % creates, 20 % reschedules, 20 % cancellations
(a create stands in while no appointment has settled), each its own transaction -- at ``rate`` per second.
Before each commit it caches one key the change must delete (a **sentinel**; every change gets hours no
other change touches, so a sentinel is deleted by its own change only). An observer subscribed to Redis'
``del`` keyevents timestamps each sentinel's deletion. Once the run is over, the records the run added to the
appointments topic are read for each change's ``source.ts_ms`` (the database commit), the envelope's
``ts_ms`` (Debezium read it) and the record timestamp (the relay produced it) -- afterwards, not while the
load runs: none of the three depends on when it is read, and a second consumer of the topic during the
run measured itself (below). All clocks are this machine's wall clock.

* ``e2e``: key gone − the client's commit (the commit call returned);
* stages: database commit → Debezium → Kafka → key gone.

Why the topic is read afterwards: a second consumer of the topic next to the worker loads the machine it
measures -- on the local broker every fetch lists every batch the partition holds (tansu's memory store).
Alternated runs at 2,000/s (scratch, two stacks each way, two rounds of 10 s each): with the reader during
the load the generator took 0.34-0.35 of a core and tansu 0.30-0.35, without it 0.31-0.35 and 0.25-0.31.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from processor.core.config import CoreConfig
from processor.worker.cluster import ClusterNodes
from processor.worker.redis_connect import redis_client
from schemas.connections import RedisConnection
from slotguard.bench.cpu import CpuMeter
from slotguard.bench.pgclient import PgClient
from slotguard.operate.kafka_group import end_offsets, records_since
from slotguard.sim.checker import percentile

#: Demo service 1: company 15, branch 1, event type 123 (schemas/sql/002_demo_services.sql).
COMPANY, BRANCH, SERVICE, EVENT_TYPE = 15, 1, 1, 123
BASE = datetime(2045, 1, 2, 0, tzinfo=UTC)
STAGES = ("commit_to_debezium", "debezium_to_kafka", "kafka_to_unlink")
#: Reschedules and cancellations pick appointments whose last change's sentinel was seen gone at least this
#: long ago: the worker's second delete of that change (SLOTGUARD_SECOND_DELETE_AFTER, 1.5 s after its first)
#: must not take the next change's sentinel. Counted from the deletion, not from the commit: with seconds of
#: pipeline lag (a cold stack at 2,000/s: p50 2.9 s) an appointment committed 3 s ago was often not deleted
#: yet, and its deletion was then attributed to the next change's sentinel (143 of 20,000 "unobserved but
#: gone" in one such warm-up).
SETTLED_S = 3.0


@dataclass
class Sample:
    key: str
    #: 0 until the client's commit returned (the sentinel is registered before the commit, so a deletion
    #: that beats the client's own return is still seen).
    commit_wall: float = 0.0
    source_ms: int | None = None
    debezium_ms: int | None = None
    kafka_ms: int | None = None
    gone_wall: float | None = None


@dataclass
class E2EResult:
    rate: float  # target changes per second
    achieved: float
    samples: list[Sample] = field(default_factory=list)
    #: Sentinels whose deletion was not observed but which are gone from Redis at the end (the observer
    #: missed the event) -- and those still cached at the end: an invalidation lost.
    unobserved_gone: int = 0
    unobserved_cached: int = 0
    #: Cores in use while the load ran (:meth:`slotguard.bench.cpu.CpuMeter.stop`); empty when not metered.
    cpu_cores: dict[str, float] = field(default_factory=dict)

    def latencies_ms(self) -> list[float]:
        # A deletion that came before the client's commit call returned counts as 0 ms.
        return sorted(
            max(0.0, (s.gone_wall - s.commit_wall) * 1000)
            for s in self.samples
            if s.gone_wall is not None and s.commit_wall
        )

    def stage_ms(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {name: [] for name in STAGES}
        for s in self.samples:
            if s.source_ms is None or s.debezium_ms is None or s.kafka_ms is None or s.gone_wall is None:
                continue
            out["commit_to_debezium"].append(float(s.debezium_ms - s.source_ms))
            out["debezium_to_kafka"].append(float(s.kafka_ms - s.debezium_ms))
            out["kafka_to_unlink"].append(s.gone_wall * 1000 - s.kafka_ms)
        return {name: sorted(values) for name, values in out.items()}

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms()
        stages = self.stage_ms()
        return {
            "rate": self.rate,
            "achieved_rate": round(self.achieved, 1),
            "changes": len(self.samples),
            "observed": len(lat),
            "unobserved_gone": self.unobserved_gone,
            "unobserved_still_cached": self.unobserved_cached,
            **{
                f"{name}_ms": _q(lat, q)
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "stages_p50_ms": {name: _q(values, 0.5) for name, values in stages.items()},
            "stages_p99_ms": {name: _q(values, 0.99) for name, values in stages.items()},
            "cpu_cores": self.cpu_cores,
        }


def _q(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 1)


#: The generator's statements (prepared on each connection; text parameters, so no client-side adaptation).
STATEMENTS: dict[bytes, bytes] = {
    b"book": b"INSERT INTO appointments (company_id, branch_id, service_id, starts_at, ends_at, status, source) "
    b"VALUES ($1, $2, $3, $4, $5, 'booked', 'bench') RETURNING id",
    b"move": b"UPDATE appointments SET starts_at = $1, ends_at = $2 WHERE id = $3 RETURNING id",
    b"cancel": b"UPDATE appointments SET status = 'cancelled' WHERE id = $1 RETURNING id",
}
#: The generator wakes at most this often and sends what is due: a wake-up per change cost 58 µs of CPU per
#: change at 2,000/s (scratch ``loopmicro.py``), 30 µs with 2 ms between wake-ups. At 2,000/s that sends
#: about four changes at once, well inside one Debezium poll (SLOTGUARD_POLL_INTERVAL_MS, 10 ms).
TICK_S = 0.002


class Committer(Protocol):
    """What the generator commits through (:class:`~slotguard.bench.pgclient.PgClient`)."""

    async def first_value(self, name: bytes, params: Sequence[bytes | None]) -> bytes: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Planned:
    """A change to commit: its prepared statement and parameters, the hour it books (-1 for a
    cancellation) and its sample."""

    statement: bytes
    params: tuple[bytes, ...]
    hour: int
    sample: Sample


def _text(value: int | datetime) -> bytes:
    return (value.isoformat() if isinstance(value, datetime) else str(value)).encode()


class Load:
    """The load generator, the observer and the topic reader for one run."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        kafka_options: dict[str, Any],
        topic: str,
        config: CoreConfig,
        seed: int = 11,
        connect: Callable[[str, dict[bytes, bytes]], Awaitable[Committer]] = PgClient.connect,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.kafka_options = kafka_options
        self.topic = topic
        self.config = config
        self.connect = connect
        self.rng = random.Random(seed)
        self.samples: list[Sample] = []
        self.sentinels: dict[str, Sample] = {}
        self.by_appointment: dict[int, deque[Sample]] = defaultdict(deque)
        #: (appointment id, hour index, the sample of its last change)
        self.live: list[tuple[int, int, Sample]] = []
        self.next_hour = 0
        self.generated = False
        self.gone = 0
        self.all_gone = asyncio.Event()

    def _check_done(self) -> None:
        if self.generated and self.gone >= len(self.samples):
            self.all_gone.set()

    def key(self, hour: int) -> str:
        bucket = int((BASE + timedelta(hours=3 * hour)).timestamp())
        rendered = self.config.template.render(str(COMPANY), str(BRANCH), str(EVENT_TYPE), [bucket])
        return self.config.redis_key_prefix + rendered[0]

    def new_hour(self) -> int:
        self.next_hour += 1
        return self.next_hour

    def _settled(self) -> int | None:
        """Index in ``live`` of an appointment whose last change's sentinel went at least :data:`SETTLED_S`
        ago."""
        cutoff = time.time() - SETTLED_S
        for _ in range(8):
            if not self.live:
                return None
            index = self.rng.randrange(len(self.live))
            gone = self.live[index][2].gone_wall
            if gone is not None and gone < cutoff:
                return index
        return None

    def plan(self) -> _Planned:
        """The next change: its statement, and its sentinel (registered as a sample, not yet cached)."""
        roll = self.rng.random()
        settled = None if roll < 0.6 else self._settled()
        hour = -1
        params: tuple[int | datetime, ...]
        if settled is None:
            hour = self.new_hour()
            statement = b"book"
            starts = BASE + timedelta(hours=3 * hour)
            params = (COMPANY, BRANCH, SERVICE, starts, starts + timedelta(hours=1))
            sentinel = self.key(hour)
        else:
            appointment, old, _ = self.live.pop(settled)
            if roll < 0.8:
                hour = self.new_hour()
                starts = BASE + timedelta(hours=3 * hour)
                statement = b"move"
                params = (starts, starts + timedelta(hours=1), appointment)
                sentinel = self.key(hour)
            else:
                statement = b"cancel"
                params = (appointment,)
                sentinel = self.key(old)
        sample = Sample(sentinel)
        self.samples.append(sample)
        self.sentinels[sentinel] = sample
        return _Planned(statement, tuple(_text(value) for value in params), hour, sample)

    async def commit(self, conn: Committer, change: _Planned) -> None:
        """Commit ``change`` (its sentinel is cached already) and note when the commit call returned."""
        appointment = int(await conn.first_value(change.statement, change.params))
        sample = change.sample
        sample.commit_wall = time.time()
        self.by_appointment[appointment].append(sample)
        if change.hour >= 0:
            self.live.append((appointment, change.hour, sample))

    async def generate(self, rate: float, seconds: float, connections: int) -> float:
        """Commit changes at ``rate`` for ``seconds`` (open loop); returns the achieved rate.

        The changes due at one wake-up (:data:`TICK_S` apart at most) are planned together and their
        sentinels cached in one pipelined round trip before any of them commits: one Redis call per change
        took about a fifth of the generator's profile samples (py-spy at 2,000/s), on the same two cores as
        the pipeline it measures."""
        cache = self._cache()
        conns: list[Committer] = []
        free: asyncio.Queue[Committer] = asyncio.Queue()
        inflight: set[asyncio.Task[None]] = set()

        async def run_one(change: _Planned) -> None:
            conn = await free.get()
            try:
                await self.commit(conn, change)
            finally:
                free.put_nowait(conn)

        try:
            for _ in range(connections):
                conns.append(await self.connect(self.database_url, STATEMENTS))
                free.put_nowait(conns[-1])
            start = time.monotonic()
            total = int(rate * seconds)
            sent = 0
            woke = start - TICK_S
            while sent < total:
                delay = max(start + sent / rate, woke + TICK_S) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the open-loop schedule
                woke = time.monotonic()
                due = min(total, int((woke - start) * rate) + 1)
                batch = [self.plan() for _ in range(max(1, due - sent))]
                sent += len(batch)
                async with cache.pipeline(transaction=False) as pipe:
                    for change in batch:
                        pipe.set(change.sample.key, b"1", ex=600)
                    await pipe.execute()
                for change in batch:
                    task = asyncio.create_task(run_one(change))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
            await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()
            for conn in conns:
                conn.close()
            await cache.aclose()
        return total / (time.monotonic() - start)

    async def unobserved(self) -> tuple[int, int]:
        """Sentinels whose deletion was not seen: (gone from Redis anyway, still cached)."""
        keys = [s.key for s in self.samples if s.gone_wall is None]
        if not keys:
            return 0, 0
        cache = self._cache()
        try:
            cached = int(await cache.exists(*keys))  # EXISTS counts every key named that exists
        finally:
            await cache.aclose()
        return len(keys) - cached, cached

    def _cache(self) -> Any:
        return redis_client(RedisConnection.parse(self.redis_url))

    async def observe(self, ready: asyncio.Event) -> None:
        """Timestamp each sentinel's deletion from the ``del`` keyevents -- of every primary on a cluster,
        where keyspace events are per node."""
        conn = RedisConnection.parse(self.redis_url)
        cache = redis_client(conn, socket_timeout=None)
        nodes = ClusterNodes(cache, conn) if conn.kind == "cluster" else None
        if nodes is not None:
            await nodes.ensure()
            servers = [nodes.client(name, socket_timeout=None) for name in nodes.primaries()]
        else:
            servers = [cache]
        subscribed = 0

        async def follow(server: Any) -> None:
            nonlocal subscribed
            current = str(
                (await server.config_get("notify-keyspace-events")).get("notify-keyspace-events", "")
            )
            missing = "".join(f for f in "Eg" if f not in current)
            if missing:
                await server.config_set("notify-keyspace-events", current + missing)
            pubsub = server.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe("__keyevent@0__:del")
                subscribed += 1
                if subscribed == len(servers):
                    ready.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    seen = time.time()
                    data = message["data"]
                    key = data.decode() if isinstance(data, bytes) else str(data)
                    sample = self.sentinels.get(key)
                    if sample is not None and sample.gone_wall is None:
                        sample.gone_wall = seen
                        self.gone += 1
                        self._check_done()
            finally:
                await pubsub.aclose()

        try:
            await asyncio.gather(*(follow(server) for server in servers))
        finally:
            await (nodes.aclose() if nodes is not None else cache.aclose())

    async def topic_end(self) -> dict[int, int]:
        """Where the appointments topic ends before the run (the run's records come after)."""
        return await end_offsets(self.kafka_options, self.topic)

    async def read_topic(self, starts: dict[int, int]) -> None:
        """The stage timestamps of the run's changes, from the records it added to the topic."""
        async for record in records_since(self.kafka_options, self.topic, starts):
            self._matched(record.value, record.timestamp)

    def _matched(self, value: bytes | None, kafka_ms: int) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            envelope = orjson.loads(value or b"null")
            if isinstance(envelope, dict) and "payload" in envelope and "schema" in envelope:
                envelope = envelope["payload"]
            row = envelope.get("after") or envelope.get("before")
            pending = self.by_appointment.get(int(row["id"]))
            if not pending:
                return
            sample = pending.popleft()
            sample.source_ms = int(envelope["source"]["ts_ms"])
            sample.debezium_ms = int(envelope["ts_ms"])
            sample.kafka_ms = kafka_ms


async def measure(
    load: Load,
    rate: float,
    seconds: float,
    *,
    connections: int = 8,
    settle: float = 30.0,
    progress: Callable[[str], None] = lambda _m: None,
    cpu: CpuMeter | None = None,
) -> E2EResult:
    """One run at ``rate``: generate, wait (at most ``settle`` s) until every sentinel is gone, then read
    the run's records for the stage timestamps. ``cpu`` meters the cores used while the load runs."""
    observer_ready = asyncio.Event()
    starts = await load.topic_end()
    observer = asyncio.create_task(load.observe(observer_ready))
    try:
        await asyncio.wait_for(observer_ready.wait(), timeout=30)
        progress(f"e2e: {rate:g} changes/s for {seconds:g} s")
        if cpu is not None:
            cpu.start()
        achieved = await load.generate(rate, seconds, connections)
        cores = cpu.stop() if cpu is not None else {}
        load.generated = True
        load._check_done()
        # The last keys to go; a change whose key never goes stays unobserved.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.all_gone.wait(), timeout=settle)
    finally:
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
    await load.read_topic(starts)
    gone, cached = await load.unobserved()
    return E2EResult(
        rate=rate,
        achieved=achieved,
        samples=list(load.samples),
        unobserved_gone=gone,
        unobserved_cached=cached,
        cpu_cores=cores,
    )
