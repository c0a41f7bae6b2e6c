"""``slotguard dev up|down|status``: the local stack (Postgres, tansu, Redis, relay, worker) without Docker."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from schemas.redact import redact_url
from slotguard.dev.errors import ServerStartError
from slotguard.dev.stack import DevStack
from slotguard.settings import load_settings


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory (default: SLOTGUARD_DATA_DIR, i.e. .slotguard); the stack lives in DIR/dev",
    )
    up = sub.add_parser("up", parents=[common], help="start the stack in the background (idempotent)")
    up.add_argument(
        "--infra-only", action="store_true", help="start only Postgres, the Kafka broker and Redis"
    )
    up.add_argument(
        "--redis",
        choices=["single", "sentinel", "cluster"],
        default=None,
        help="Redis as one server (default), a primary and a replica behind three Sentinels, or a cluster of "
        "three primaries with a replica each (default: what this stack ran before)",
    )
    up.set_defaults(func=run_up)
    down = sub.add_parser("down", parents=[common], help="stop everything `dev up` started")
    down.set_defaults(func=run_down)
    status = sub.add_parser("status", parents=[common], help="show each part, its port and health")
    status.set_defaults(func=run_status)


def _stack(args: argparse.Namespace) -> DevStack:
    settings = load_settings()
    base: Path = args.dir if args.dir is not None else settings.data_dir
    return DevStack(base, slot_name=settings.slot_name, redis=getattr(args, "redis", None))


def run_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    err = Console(stderr=True)
    began = time.monotonic()
    marks: dict[str, float] = {}

    with err.status("starting the local stack…") as spinner:

        def on_event(part: str, event: str) -> None:
            if event == "starting":
                marks[part] = time.monotonic()
                spinner.update(f"starting {part}…")
            elif event == "waiting":
                spinner.update(f"waiting for {part} to answer…")
            elif event == "ready":
                took = time.monotonic() - marks.get(part, began)
                err.print(f"[green]✓[/] {part} ready ({took:.1f} s)")
            elif event == "running":
                err.print(f"[cyan]•[/] {part} already running")

        try:
            result = stack.up(infra_only=args.infra_only, on_event=on_event)
        except ServerStartError as exc:
            if exc.log_tail:
                err.print(f"[red]--- log tail ---[/]\n{exc.log_tail}", markup=False, highlight=False)
            raise

    if result.started:
        err.print(f"started {', '.join(result.started)} in {time.monotonic() - began:.1f} s")
    else:
        err.print("everything was already running")
    err.print(f"# variables written to {stack.paths.env_file}")
    for key, value in result.info.env().items():
        shown = redact_url(value) if key.endswith("_URL") else value
        sys.stdout.write(f"{key}={shown}\n")
    return 0


def run_down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    err = Console(stderr=True)
    stopped = stack.down(on_event=lambda part, _event: err.print(f"[green]✓[/] {part} stopped"))
    if not stopped:
        err.print("nothing was running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    parts = stack.status()
    if not parts:
        Console(stderr=True).print(f"no stack in {stack.paths.root} (run `slotguard dev up`)")
        return 1
    table = Table(title=f"slotguard dev stack in {stack.paths.root}")
    for column in ("part", "pid", "port", "state", "address"):
        table.add_column(column)
    for part in parts:
        if part.healthy:
            state = "[green]healthy[/]"
        elif part.running:
            state = "[yellow]running, not answering[/]"
        else:
            state = "[dim]stopped[/]"
        table.add_row(
            part.name,
            str(part.pid or "—"),
            str(part.port or "—"),
            state,
            redact_url(part.url),
        )
    Console().print(table)
    infra_ok = all(p.healthy for p in parts if p.name in ("postgres", "kafka", "redis"))
    return 0 if infra_ok else 1
