"""``slotguard replay``: reset the worker group's offsets on the appointments topic, or re-feed dead letters.

slotguard replay --to-datetime 2025-10-15T14:00:00Z --dry-run
slotguard replay --by-duration 2h --yes
slotguard replay --to-offset 0:1200 --to-offset 1:900
slotguard replay --from-dlq --since 2025-10-15T00:00:00Z --dry-run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from schemas.errors import ConfigError
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="Reprocess everything still in the topic.")
    target.add_argument("--to-latest", action="store_true", help="Skip everything not yet processed.")
    target.add_argument(
        "--to-datetime", metavar="ISO8601", help="Reprocess changes logged at or after this time."
    )
    target.add_argument(
        "--by-duration", metavar="DURATION", help="Reprocess the last DURATION, e.g. 2h, 90m, 1d12h."
    )
    target.add_argument(
        "--to-offset",
        metavar="PARTITION:OFFSET",
        action="append",
        help="Set one partition's offset (repeatable).",
    )
    target.add_argument(
        "--from-dlq", action="store_true", help="Re-feed dead letters into the appointments topic."
    )
    parser.add_argument("--partitions", metavar="0,2", help="Only these partitions (offset resets).")
    parser.add_argument(
        "--since", metavar="ISO8601", help="With --from-dlq: only dead letters since this time."
    )
    parser.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")
    parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
    parser.add_argument(
        "--force",
        action="store_true",
        help="Skip the active-member check and commit by joining the group (evicting members that no longer "
        "heartbeat): for a member still listed after it died (kill -9: until its session times out) or a "
        "broker that keeps members listed after they left. Only when you know no worker runs.",
    )
    parser.set_defaults(func=run)


def _confirm(question: str, args: argparse.Namespace) -> None:
    from slotguard.operate.replay import ReplayRefused

    if args.yes:
        return
    if not sys.stdin.isatty():
        raise ReplayRefused("not confirmed: stdin is not a terminal; pass --yes to replay without asking")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ReplayRefused("not confirmed; nothing changed")


def run(args: argparse.Namespace) -> int:
    from slotguard.operate import replay
    from slotguard.operate.kafka_group import quiet_kafka_client
    from slotguard.wiring import kafka_connection

    settings = load_settings()
    options = kafka_connection(settings).aiokafka_options()
    console = Console()
    with quiet_kafka_client():
        if args.from_dlq:
            return _from_dlq(args, settings, options, console)
        if args.to_earliest:
            target = replay.Target("earliest")
        elif args.to_latest:
            target = replay.Target("latest")
        elif args.to_datetime:
            target = replay.Target("datetime", when=replay.parse_datetime(args.to_datetime))
        elif args.by_duration:
            target = replay.Target(
                "datetime", when=datetime.now(UTC) - replay.parse_duration(args.by_duration)
            )
        else:
            target = replay.Target("offsets", offsets=tuple(replay.parse_offset(o) for o in args.to_offset))
        partitions = _partitions(args.partitions)
        group, topic = settings.consumer_group, settings.appointments_topic
        plans = asyncio.run(replay.plan(options, group, topic, target, partitions))
        members = [] if args.force else asyncio.run(replay.active_members(options, group))
        table = Table(title=f"replay of group {group} on {topic}" + (" (dry run)" if args.dry_run else ""))
        for column in ("partition", "committed", "new offset", "log end", "changes reprocessed"):
            table.add_column(column, justify="right")
        for p in plans:
            table.add_row(
                str(p.partition),
                "-" if p.current is None else str(p.current),
                str(p.new),
                str(p.end),
                str(p.reprocessed),
            )
        console.print(table)
        total = sum(p.reprocessed for p in plans)
        if members:
            message = replay.refusal(group, members)
            if args.dry_run:
                console.print(f"[yellow]would be refused now:[/] {message}")
                return 0
            raise replay.ReplayRefused(message)
        if args.dry_run:
            console.print(f"dry run: {total} change(s) would be reprocessed; nothing changed")
            return 0
        _confirm(f"Reset {len(plans)} partition(s) of group {group} ({total} change(s) reprocessed)?", args)
        asyncio.run(replay.apply(options, group, topic, plans, check_members=not args.force))
        console.print(f"reset {len(plans)} partition(s); the next worker start reprocesses {total} change(s)")
        return 0


def _partitions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ConfigError(f"--partitions {text!r}: expected numbers, e.g. 0,2") from None


def _from_dlq(
    args: argparse.Namespace, settings: object, options: dict[str, object], console: Console
) -> int:
    from slotguard.operate import replay
    from slotguard.operate.kafka_group import commit_offsets
    from slotguard.settings import Settings

    assert isinstance(settings, Settings)
    since = replay.parse_datetime(args.since) if args.since else None
    progress = replay.replay_group(settings.consumer_group)
    letters, ends = asyncio.run(replay.read_dead_letters(options, settings.dlq_topic, since, progress))
    fresh = [d for d in letters if not d.replayed]
    table = Table(title=f"dead letters in {settings.dlq_topic}" + (" (dry run)" if args.dry_run else ""))
    for column in ("partition", "offset", "time", "error", "replayed before"):
        table.add_column(column)
    for d in letters[:50]:
        when = datetime.fromtimestamp(d.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
        table.add_row(str(d.partition), str(d.offset), when, d.error[:80], "yes" if d.replayed else "")
    console.print(table)
    if len(letters) > 50:
        console.print(f"... and {len(letters) - 50} more")
    skipped = len(letters) - len(fresh)
    if args.dry_run:
        console.print(
            f"dry run: {len(fresh)} dead letter(s) would be re-fed ({skipped} replayed before, skipped)"
        )
        return 0
    if not fresh:
        if ends:
            asyncio.run(commit_offsets(options, progress, settings.dlq_topic, ends))
        console.print(f"nothing to re-feed ({skipped} replayed before, skipped)")
        return 0
    _confirm(f"Re-feed {len(fresh)} dead letter(s) into {settings.appointments_topic}?", args)
    sent = asyncio.run(
        replay.refeed(
            options,
            fresh,
            dlq=settings.dlq_topic,
            topic=settings.appointments_topic,
            enable_idempotence=settings.kafka_enable_idempotence,
        )
    )
    # Remember how far this replay got: the next one starts after these letters.
    asyncio.run(commit_offsets(options, progress, settings.dlq_topic, ends))
    console.print(f"re-fed {sent} dead letter(s) into {settings.appointments_topic}")
    return 0
