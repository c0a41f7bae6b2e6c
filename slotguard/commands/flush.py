"""``slotguard flush``: delete cached keys by hand -- every key, a company's, or a branch's.

Counts first, then asks (``--yes`` does not ask, ``--dry-run`` only counts). ``SCAN`` + ``UNLINK`` in
chunks at ``SLOTGUARD_FLUSH_RATE`` keys/s, progress in the log; killed, the same command goes on where it
stopped (:mod:`slotguard.operate.flush`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from schemas.errors import ConfigError
from slotguard.commands import add_logging_options, logging_overrides
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--all", action="store_true", help="Every cached key of the key template.")
    who.add_argument("--company", default=None, help="Only this company's keys.")
    parser.add_argument("--branch", default=None, help="Only this branch of --company.")
    parser.add_argument("--dry-run", action="store_true", help="Count the keys; delete nothing.")
    parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Serve the flush's metrics on this port."
    )
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from slotguard.logs import configure_logging
    from slotguard.operate.flush import FlushMetrics
    from slotguard.operate.source import count_keys, run_flush, tenant_scope

    settings = load_settings(**logging_overrides(args))
    configure_logging(settings.log_level, json=settings.log_json)
    scope = tenant_scope(settings, args.company, args.branch)
    patterns = scope.patterns(settings)
    keys = asyncio.run(count_keys(settings, scope))
    print(f"{keys} key(s) match {', '.join(patterns)}")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("not a terminal: add --yes to go ahead (or --dry-run to count only)")
        if input(f"delete them, at most {settings.flush_rate:.0f} a second? [y/N] ").strip().lower() not in (
            "y",
            "yes",
        ):
            print("nothing deleted", file=sys.stderr)
            return 1
    metrics = FlushMetrics()
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=metrics.registry)
    done = asyncio.run(run_flush(settings, scope, metrics))
    resumed = " (resumed an interrupted flush)" if done.resumed else ""
    print(f"flushed {done.deleted} key(s) in {done.seconds:.1f}s, {done.scanned} scanned{resumed}")
    return 0
