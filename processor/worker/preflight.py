"""Checks run before the Faust worker starts, so a misconfiguration is one clear line, not a traceback.

Only Kafka is checked: without it the worker can do nothing. Redis is deliberately *not* required at start
-- the worker runs (and holds back commits) while Redis is down, and catches up when it returns.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from processor.worker.errors import KafkaUnreachable
from schemas.connections import KafkaConnection


async def _bootstrap(kafka: KafkaConnection, request_timeout_ms: int) -> None:
    client = AIOKafkaClient(**kafka.aiokafka_options(), request_timeout_ms=request_timeout_ms)
    try:
        await client.bootstrap()
    finally:
        await client.close()


def check_kafka(kafka: KafkaConnection, timeout: float = 10.0) -> None:
    """Raise :class:`KafkaUnreachable` unless a broker of ``kafka`` answers a metadata request."""
    # aiokafka logs each failed connection attempt itself; the error raised below already says it all.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(asyncio.wait_for(_bootstrap(kafka, int(timeout * 1000)), timeout))
    except (KafkaError, OSError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise KafkaUnreachable(
            f"no Kafka broker answered at {kafka.bootstrap} (SLOTGUARD_KAFKA_BOOTSTRAP): {reason}"
        ) from None
    finally:
        client_log.setLevel(level)
