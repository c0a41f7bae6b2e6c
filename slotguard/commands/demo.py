"""``slotguard demo``: a booking business on the local stack, and how stale its cached availability gets.

Starts the local stack (relay and worker included), seeds a business (companies × branches × services, an
hour per slot) and runs it for ``--seconds``: readers ask for free slots through a read-through Redis cache
exactly as the booking app does (a miss computes the answer from Postgres, waits a simulated Cal.com call,
then ``SET … EX 300``), customers book what they were shown, movers reschedule, cancel, soft-delete and clear
slots as each booking source's SQL. A checker compares every cached answer with Postgres' committed truth
(``slotguard/sim/checker.py``). ``--mode`` picks how the cache is kept honest, ``--compare`` runs every mode
back to back on the same seeded workload; by default the TTL-only cache runs first as the baseline, and a
sentence per mode says how it compares with the goal. At the end the stack is stopped unless ``--keep-running``.
``--walkthrough`` is the three-step tour instead (one booking, reschedule, cancel).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live

from slotguard.settings import load_settings
from slotguard.sim.modes import MODES

DEFAULT_SECONDS = 60.0

#: The demo's key template on a cluster: the seed's, with the company as hash tag (docs/leases.md).
CLUSTER_TEMPLATE = "cal_slots_{{{company}}}_{branch}_{event_type}_{start:%Y-%m-%d-%H}_{end:%Y-%m-%d-%H}"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory of the local stack (default: SLOTGUARD_DATA_DIR, i.e. .slotguard)",
    )
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="how long each mode runs (default: 60)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="guarded",
        help="ttl-only: no worker; invalidate: one delete; guarded: delete + keyspace guard + second delete "
        "(default); lease: readers fill through leases",
    )
    parser.add_argument("--compare", action="store_true", help="run every mode back to back, one table")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="run only --mode (by default the TTL-only cache runs first, as the baseline it is judged by)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default: 7)")
    parser.add_argument(
        "--redis",
        choices=["single", "sentinel", "cluster"],
        default=None,
        help="the local stack's Redis: one server (default), behind Sentinels, or a cluster -- where the keys "
        # argparse expands % in help texts: the template's strftime codes are doubled.
        f"carry a hash tag ({CLUSTER_TEMPLATE.replace('%', '%%')}), so a key and its lease share a slot",
    )
    parser.add_argument(
        "--walkthrough",
        action="store_true",
        help="instead: book, reschedule and cancel one appointment and watch its keys vanish",
    )
    parser.add_argument(
        "--keep-running",
        dest="down",
        action="store_false",
        help="leave the stack running at the end (default: stop it)",
    )
    parser.add_argument("--down", dest="down", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run, down=True)


def run(args: argparse.Namespace) -> int:
    from slotguard.commands.walkthrough import start_stack, walk
    from slotguard.dev.kafka import BROKER_SETTINGS
    from slotguard.dev.stack import DevStack

    settings = load_settings()
    if args.seconds <= 0:
        raise SystemExit("slotguard demo: error: --seconds must be positive")
    base: Path = args.dir if args.dir is not None else settings.data_dir
    console = Console()
    dir_option = f" --dir {args.dir}" if args.dir is not None else ""
    stack = DevStack(base, slot_name=settings.slot_name, redis=args.redis)
    try:
        info = start_stack(console, stack)
        if args.walkthrough:
            return walk(console, settings, stack, info, dir_option)
        if args.compare:
            names = list(MODES)
        elif args.baseline and args.mode != "ttl-only":
            names = ["ttl-only", args.mode]
        else:
            names = [args.mode]
        # The stack's own servers, whatever the environment points at.
        on_cluster = info.redis_url.startswith(("redis+cluster", "rediss+cluster"))
        on_stack = load_settings(
            database_url=info.database_url,
            kafka_bootstrap=info.kafka_bootstrap,
            redis_url=info.redis_url,
            **({"key_template": CLUSTER_TEMPLATE} if on_cluster else {}),
            **BROKER_SETTINGS,
        )
        return simulate(console, args, on_stack, stack, info, names)
    finally:
        if args.down:
            # Also after a failure: the demo promises that nothing of it is left running.
            stopped = stack.down(on_event=lambda part, _event: console.print(f"[green]✓[/] {part} stopped"))
            console.print(f"[bold]stack stopped[/] ({len(stopped)} parts)")
        else:
            console.print(f"[bold]The stack keeps running[/]; stop it with: slotguard dev down{dir_option}")


def simulate(
    console: Console, args: argparse.Namespace, settings: Any, stack: Any, info: Any, names: list[str]
) -> int:
    from slotguard.sim.business import Workload
    from slotguard.sim.engine import Tally
    from slotguard.sim.report import comparison_table, live_table, verdict
    from slotguard.sim.runner import simulate as run_modes

    workload = Workload(seconds=args.seconds, seed=args.seed)
    with Live(console=console, refresh_per_second=4, transient=True) as live:

        def on_event(mode: str, what: str) -> None:
            console.print(f"[cyan]•[/] [bold]{mode}[/]: {what}")

        def on_second(mode: str, tally: Tally, elapsed: float) -> None:
            live.update(live_table(mode, tally, elapsed, workload.seconds))

        result = run_modes(
            stack,
            info,
            settings,
            workload,
            names,
            on_event=on_event,
            on_second=on_second,
            restore_worker=not args.down,
        )
    console.print(comparison_table(result["modes"]))
    for sentence in verdict(result["modes"]):
        console.print(sentence, markup=False, highlight=False)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        console.print(f"figures written to {args.json}")
    return 0
