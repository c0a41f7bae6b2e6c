"""``slotguard doctor``: check Postgres, Kafka, Redis and the settings; one line per check, exit 1 on any ✗."""

from __future__ import annotations

import argparse
import json
import sys

from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print the checks as a JSON array.")
    parser.add_argument(
        "--only",
        action="append",
        choices=["settings", "postgres", "kafka", "redis"],
        help="Run only these groups of checks (repeatable).",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from slotguard.operate.doctor import CHECKS, as_json, run_checks

    settings = load_settings()
    checks = run_checks(settings, args.only or list(CHECKS))
    if args.json:
        sys.stdout.write(json.dumps(as_json(checks), indent=2, ensure_ascii=False) + "\n")
    else:
        for check in checks:
            print(check.line())
        failed = sum(c.status == "fail" for c in checks)
        warned = sum(c.status == "warn" for c in checks)
        print(f"{len(checks)} checks: {failed} failed, {warned} warning(s)")
    return 1 if any(c.status == "fail" for c in checks) else 0
