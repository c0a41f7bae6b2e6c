"""``slotguard source status|recover``: is the change stream whole, and the one step back when it is not.

``status`` compares the connector's stored position (the relay's offsets file, or with ``--connect-url``
Kafka Connect's stored offsets) with its replication slot. ``recover`` recovers from a gap: new slot,
offsets reset, the gap recorded for the workers, and every key that may be stale flushed (see
:mod:`slotguard.operate.source`). ``--dry-run`` shows the plan and the number of keys; without ``--yes`` it
asks first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from connectors.config import CONNECTOR_NAME
from connectors.connect_api import ConnectClient
from schemas.control import format_lsn
from schemas.errors import ConfigError
from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import Settings, load_settings


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("status", "Compare the connector's stored position with its replication slot; exit 1 on a gap."),
        ("recover", "Recover from a gap: new slot, offsets reset, the gap recorded, stale keys flushed."),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--connect-url",
            default=None,
            help="Kafka Connect REST URL: the connector runs there (default: SLOTGUARD_CONNECT_URL; unset: the "
            "local relay).",
        )
        p.add_argument("--name", default=CONNECTOR_NAME, help=f"Connector name (default: {CONNECTOR_NAME}).")
        if name == "recover":
            p.add_argument(
                "--scope",
                choices=["all", "changed"],
                default="all",
                help="What to flush: every cached key (default), or the keys of the tenants whose rows "
                "changed since the gap began (SLOTGUARD_CHANGED_AT_COLUMN; misses rows deleted outright).",
            )
            p.add_argument("--dry-run", action="store_true", help="Show what would be done; change nothing.")
            p.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
            p.add_argument(
                "--metrics-port", type=int, default=None, help="Serve the flush's metrics on this port."
            )
            add_logging_options(p)
        p.set_defaults(func=run_status if name == "status" else run_recover)


def _connect(args: argparse.Namespace, settings: Settings) -> ConnectClient | None:
    url = args.connect_url or settings.connect_url
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError("the Kafka Connect URL must start with http:// or https://")
    return ConnectClient(url)


def run_status(args: argparse.Namespace) -> int:
    from slotguard.operate.source import diagnose

    settings = load_settings()
    status = diagnose(settings, _connect(args, settings), args.name)
    position = status.position
    print(
        f"stored position ({status.runtime}): "
        + (f"LSN {format_lsn(position.lsn)}" if position else "none (the connector starts afresh)")
    )
    slot = status.slot
    if slot is None:
        print(f"replication slot {settings.slot_name!r}: missing")
    else:
        confirmed = format_lsn(slot.confirmed_flush_lsn) if slot.confirmed_flush_lsn is not None else "?"
        print(
            f"replication slot {slot.name!r}: {'active' if slot.active else 'inactive'}, "
            f"wal_status {slot.wal_status}, confirmed to {confirmed}"
        )
    if status.gap is not None:
        print(f"✗ {status.gap.describe()}")
        return 1
    print("✓ the change stream is whole")
    return 0


def run_recover(args: argparse.Namespace) -> int:
    from slotguard.logs import configure_logging
    from slotguard.operate.source import changed_scope, count_keys, diagnose, pending_recovery, recover

    settings = load_settings(**logging_overrides(args))
    configure_logging(settings.log_level, json=settings.log_json)
    connect = _connect(args, settings)
    status = diagnose(settings, connect, args.name)
    gap, resumed_at, scope_mode = status.gap, None, args.scope
    if gap is None:
        pending = asyncio.run(pending_recovery(settings))
        if pending is not None and pending[1] >= 0:
            gap, resumed_at, scope_mode = pending
            print(f"an interrupted recovery is pending: {gap.describe().split(';')[0]}")
    if gap is None:
        print(
            f"no gap: replication slot {settings.slot_name!r} serves the stored position; nothing to recover"
        )
        return 0
    if resumed_at is None:
        print(gap.describe())
    scope = changed_scope(settings, gap.position.time) if scope_mode == "changed" else None
    _print_plan(settings, args, scope.describe() if scope else "every cached key", resumed_at)
    if args.dry_run:
        from slotguard.operate.source import Scope

        keys = asyncio.run(count_keys(settings, scope or Scope(None)))
        print(f"dry run: {keys} key(s) would be flushed; nothing was changed")
        return 0
    if not args.yes and not _confirm("recover now?"):
        print("not recovered", file=sys.stderr)
        return 1
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        from slotguard.operate.flush import FlushMetrics

        metrics = FlushMetrics()
        start_http_server(args.metrics_port, registry=metrics.registry)
    else:
        metrics = None
    done = recover(
        settings,
        gap,
        scope_mode,
        connect=connect,
        name=args.name,
        metrics=metrics,
        say=print,
        resumed_at=resumed_at,
    )
    print(
        f"recovered: changes are captured from LSN {format_lsn(done.resumed_at)}; "
        f"{done.flushed.deleted} key(s) flushed. "
        + ("Start the relay again." if connect is None else "The connector was resumed.")
    )
    return 0


def _print_plan(settings: Settings, args: argparse.Namespace, scope: str, resumed_at: int | None) -> None:
    steps = []
    if resumed_at is None:
        url = args.connect_url or settings.connect_url
        where = f"connector {args.name} on {url}" if url else "the relay"
        steps += [
            f"create publication {settings.publication_name!r} if missing, and replication slot "
            f"{settings.slot_name!r} at the current LSN",
            f"reset the offsets of {where}",
        ]
    steps += [
        f"flush {scope} (at most {settings.flush_rate:.0f} keys/s)",
        "record the gap on the heartbeat topic, for the workers",
    ]
    print("plan:\n" + "\n".join(f"  {i}. {step}" for i, step in enumerate(steps, 1)))


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError("not a terminal: add --yes to go ahead (or --dry-run to see the plan)")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
