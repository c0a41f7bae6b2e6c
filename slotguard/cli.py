"""The ``slotguard`` command: the composition root.

Subcommands live in :mod:`slotguard.commands`, one module each, imported only when chosen so that
``slotguard explain`` does not pay for Faust or the JVM. Errors that slotguard raises on purpose
(:class:`~schemas.errors.SlotguardError`) become one line on stderr and exit status 2 -- no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from schemas.errors import SlotguardError

#: subcommand -> (module in slotguard.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "explain": ("explain", "Show the booking events and cache keys one change event yields."),
    "dev": ("dev", "Start, stop or inspect the local stack (Postgres, Kafka broker, Redis, relay, worker)."),
    "relay": ("relay", "Stream Postgres changes into Kafka with the embedded Debezium engine."),
    "worker": ("worker", "Run the invalidation worker (Faust)."),
    "doctor": (
        "doctor",
        "Check Postgres, Kafka, Redis and the settings: one line per check, exit 1 on a failure.",
    ),
    "replay": ("replay", "Reset the worker group's offsets (redo invalidations) or re-feed dead letters."),
    "topics": ("topics", "Create missing topics and report drift from topics.yaml."),
    "bench": ("bench", "Run the benchmark suite on a private local stack; write results.json and report.md."),
    "connector": (
        "connector",
        "Render, register, inspect or restart the Debezium connector on Kafka Connect.",
    ),
    "source": ("source", "Check the change stream for a gap (a lost replication slot) and recover from it."),
    "flush": (
        "flush",
        "Delete cached keys by pattern (all, a company's, a branch's): counted, confirmed, resumable.",
    ),
    "demo": (
        "demo",
        "Simulate a booking business on the local stack and measure how stale its cached availability gets.",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slotguard",
        description="Invalidate booking-slot cache keys in Redis from Postgres change data capture.",
        epilog="Settings come from SLOTGUARD_* environment variables (see README.md).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            mod = importlib.import_module(f"slotguard.commands.{module}")
            mod.register(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    try:
        result: int = args.func(args)
    except SlotguardError as exc:
        print(f"slotguard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
