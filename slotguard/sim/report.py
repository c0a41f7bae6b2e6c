"""The simulation's figures: one row per mode, the ``--json`` document, the live view."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from slotguard.sim.engine import Tally

#: Figures shown in the comparison table: (json key, column title, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("reads", "reads", "{:,}"),
    ("hit_rate", "hit rate", "{:.1%}"),
    ("stale_reads", "stale reads", "{:,}"),
    ("stale_read_rate", "stale %", "{:.3%}"),
    ("stale_reads_after_delete", "stale after delete", "{:,}"),
    ("stale_window_p50_ms", "stale window p50", "{:,.0f} ms"),
    ("stale_window_p99_ms", "p99", "{:,.0f} ms"),
    ("stale_window_max_ms", "max", "{:,.0f} ms"),
    ("stale_fills", "stale fills", "{:,}"),
    ("stale_fills_after_delete", "after delete", "{:,}"),
    ("conflicts", "conflicts", "{:,}"),
    ("commit_to_delete_p50_ms", "commit→delete p50", "{:,.0f} ms"),
    ("commit_to_delete_p99_ms", "p99", "{:,.0f} ms"),
    ("dlq", "DLQ", "{:,}"),
)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` are (upper bound, cumulative count), ascending,
    ending with +Inf; linear inside the bucket. ``None`` without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    return fmt.format(value)


def comparison_table(modes: Mapping[str, Mapping[str, Any]], title: str = "slotguard simulation") -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("figure")
    for name in modes:
        table.add_column(name, justify="right")
    for key, label, fmt in COLUMNS:
        table.add_row(label, *(cell(figures.get(key), fmt) for figures in modes.values()))
    return table


#: The goal a kept-honest cache meets: stale reads at most this share of the TTL-only cache's, and none after
#: the worker's delete.
GOAL_SHARE = 0.01


def verdict(modes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per mode measured beside the TTL-only baseline: how stale it was, against the goal."""
    base = modes.get("ttl-only")
    if base is None:
        return []
    baseline = int(base.get("stale_reads") or 0)
    sentences = []
    for name, figures in modes.items():
        if name == "ttl-only":
            continue
        stale = int(figures.get("stale_reads") or 0)
        after = int(figures.get("stale_reads_after_delete") or 0)
        share = stale / baseline if baseline else 0.0
        met = share <= GOAL_SHARE and after == 0
        sentences.append(
            f"{name}: {stale:,} stale reads against {baseline:,} with the TTL alone ({share:.2%}), "
            f"{after:,} after the worker's delete -- "
            + (
                "the goal is met (at most 1 %, none after the delete)."
                if met
                else "the goal (at most 1 %, none after the delete) is NOT met."
            )
        )
    return sentences


def live_table(mode: str, tally: Tally, elapsed: float, seconds: float) -> Table:
    table = Table(title=f"mode {mode} · {elapsed:.0f}/{seconds:.0f} s", box=None, title_justify="left")
    table.add_column("reads", justify="right")
    table.add_column("hit rate", justify="right")
    table.add_column("bookings", justify="right")
    table.add_column("moves", justify="right")
    table.add_column("frees", justify="right")
    table.add_column("conflicts", justify="right")
    table.add_column("fills", justify="right")
    table.add_column("refused fills", justify="right")
    table.add_column("invalidations seen", justify="right")
    rate = tally.hits / tally.reads if tally.reads else 0.0
    table.add_row(
        f"{tally.reads:,}",
        f"{rate:.1%}",
        f"{tally.bookings:,}",
        f"{tally.moves:,}",
        f"{tally.frees:,}",
        f"{tally.conflicts:,}",
        f"{tally.fills:,}",
        f"{tally.fills_refused:,}",
        f"{tally.invalidations:,}",
    )
    return table
