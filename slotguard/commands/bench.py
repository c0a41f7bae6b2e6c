"""``slotguard bench [--quick] --out DIR``: the benchmark suite on a private local stack."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="Directory for results.json, report.md and plots."
    )
    parser.add_argument("--quick", action="store_true", help="Smaller inputs (minutes on 2 cores).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from slotguard.bench.run import run as bench

    console = Console()
    with console.status("benchmarking") as status:

        def progress(message: str) -> None:
            console.log(message)
            status.update(message)

        results = bench(args.out, quick=args.quick, progress=progress)
    console.print((args.out / "report.md").read_text(encoding="utf-8"))
    console.print(f"results: {args.out / 'results.json'}")
    return 0 if results else 1
