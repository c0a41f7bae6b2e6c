"""The baseline the worker is measured against: a naive Faust agent, one ``DEL`` awaited per event.

Run as ``python -P -m slotguard.bench.naive_agent`` with the worker's ``SLOTGUARD_*`` settings; it consumes
the appointments topic in the same consumer group semantics (its own group), runs the same core per event
and commits through Faust's per-event stream, as a first Faust implementation of the seed would.
"""

from __future__ import annotations

import faust
import redis.asyncio as aioredis

from processor.core.derive import process_change
from processor.core.resolver import InMemoryResolver, ServiceInfo
from slotguard.bench.workload import SERVICE_MAP
from slotguard.settings import load_settings
from slotguard.wiring import core_config


def main() -> None:
    settings = load_settings()
    config = core_config(settings)
    resolver = InMemoryResolver(ServiceInfo(str(s), str(c), str(e)) for s, (c, e) in SERVICE_MAP.items())
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "naive-{conf.name}"),
        autodiscover=False,
        topic_disable_leader=True,
        web_enabled=False,
        broker_session_timeout=settings.broker_session_timeout,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(
        settings.appointments_topic,
        key_type=bytes,
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        allow_empty=True,
    )
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())

    @app.agent(topic)
    async def invalidate(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            outcome = process_change(value, config, resolver)
            if outcome.redis_keys:
                await client.delete(*outcome.redis_keys)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
