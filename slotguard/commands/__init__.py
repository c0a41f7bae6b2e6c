"""CLI subcommands; each module exposes ``register(parser)``, which sets ``func`` to its ``run``."""

from __future__ import annotations

import argparse


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-json``, shared by the long-running commands."""
    parser.add_argument("--log-level", default=None, help="Log level (default: SLOTGUARD_LOG_LEVEL).")
    parser.add_argument("--log-json", action="store_true", default=None, help="One JSON object per log line.")


def logging_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings overrides the logging options ask for (only what was given on the command line)."""
    overrides: dict[str, object] = {}
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    if args.log_json:
        overrides["log_json"] = True
    return overrides
