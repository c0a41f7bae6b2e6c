"""``slotguard explain FILE|-``: show what one change event yields, without Kafka or Redis.

Reads one Kafka message value (a Debezium change event as JSON; ``null`` for a tombstone), runs it through
the same core the worker uses, with the same ``SLOTGUARD_*`` settings, and prints one JSON object:
``{"events": [...], "keys": [...], "redis_keys": [...], "warnings": [...]}``. Event types come from
``--event-type SERVICE_ID=EVENT_TYPE_ID`` (repeatable); ``--company SERVICE_ID=COMPANY_ID`` says which
company a service belongs to, which the "invalidate every event type of the company" fallback uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from schemas.errors import InputError


class ExplainInputError(InputError):
    """The input file or an option value cannot be used."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="change event as JSON (a Kafka message value), or - for stdin"
    )
    parser.add_argument(
        "--event-type",
        metavar="SERVICE_ID=EVENT_TYPE_ID",
        action="append",
        default=[],
        help="event type of a service (repeatable)",
    )
    parser.add_argument(
        "--company",
        metavar="SERVICE_ID=COMPANY_ID",
        action="append",
        default=[],
        help="company a service belongs to (repeatable; feeds the unknown-event-type fallback)",
    )
    parser.set_defaults(func=run)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise ExplainInputError(f"{option} {value!r}: expected SERVICE_ID=VALUE")
        pairs[key] = item
    return pairs


def _read(file: str) -> bytes:
    if file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise ExplainInputError(f"cannot read {file}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    # Imported here so that `slotguard --help` stays fast.
    from processor.core.derive import process_change
    from processor.core.resolver import InMemoryResolver, ServiceInfo
    from slotguard.settings import load_settings
    from slotguard.wiring import core_config

    event_types = _pairs(args.event_type, "--event-type")
    companies = _pairs(args.company, "--company")
    resolver = InMemoryResolver(
        ServiceInfo(service_id, companies.get(service_id), event_types.get(service_id))
        for service_id in sorted(event_types.keys() | companies.keys())
    )
    config = core_config(load_settings())
    raw = _read(args.file).strip()
    if not raw:
        raise ExplainInputError("empty input; a tombstone is written as null")
    outcome = process_change(raw, config, resolver)
    document = {
        # Same shape as the events topic (orjson renders the instants).
        "events": [event.model_dump(by_alias=True) for event in outcome.events],
        "keys": outcome.keys,
        "redis_keys": outcome.redis_keys,
        "warnings": outcome.warnings,
    }
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    return 0
