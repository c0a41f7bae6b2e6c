"""``slotguard topics apply``: create missing topics, report drift, alter only when asked."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "apply", help="Create missing topics; report (or with --alter fix) drift of existing ones."
    )
    p.add_argument(
        "--file", type=Path, default=None, help="Topic declarations (default: connectors/topics.yaml)."
    )
    p.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")
    p.add_argument("--alter", action="store_true", help="Also change existing topics that drifted.")
    p.set_defaults(func=run_apply)


SYMBOLS = {"ok": "✓", "create": "+", "drift": "!", "alter": "~"}


def run_apply(args: argparse.Namespace) -> int:
    from slotguard.operate.kafka_group import quiet_kafka_client
    from slotguard.operate.topics import apply, default_file, load_specs
    from slotguard.wiring import kafka_connection

    settings = load_settings()
    specs = load_specs(args.file or default_file(), settings)
    with quiet_kafka_client():
        reports = asyncio.run(
            apply(
                kafka_connection(settings).aiokafka_options(), specs, dry_run=args.dry_run, alter=args.alter
            )
        )
    verb = {
        "create": "would create" if args.dry_run else "created",
        "alter": "would alter" if args.dry_run else "altered",
    }
    for r in reports:
        what = {"ok": "as declared", "drift": "drift (unchanged; --alter to fix)"}.get(
            r.action, verb.get(r.action, r.action)
        )
        detail = f": {'; '.join(r.differences)}" if r.differences else ""
        unverified = (
            f" (configs not reported by the broker: {', '.join(r.unverified)})" if r.unverified else ""
        )
        print(f"{SYMBOLS[r.action]} {r.spec.name} ({r.spec.role}) {what}{detail}{unverified}")
    return 1 if any(r.action == "drift" for r in reports) else 0
