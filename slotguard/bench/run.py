"""The benchmark run: a private local stack, each part measured in turn, results.json + report.md + plots."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from slotguard.bench import instructions
from slotguard.bench.core_bench import measure_quietly
from slotguard.bench.drain import DrainResult, drain, naive_command, prefill, worker_command
from slotguard.bench.errors import BenchError
from slotguard.bench.workload import changes
from slotguard.settings import Settings
from slotguard.wiring import core_config

if TYPE_CHECKING:
    from slotguard.bench.cpu import CpuMeter
    from slotguard.bench.e2e import E2EResult, Load
    from slotguard.dev.stack import DevStack, StackInfo

Progress = Callable[[str], None]


def machine() -> dict[str, Any]:
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block
            key, _, value = line.partition(":")
            cpu[key.strip()] = value.strip()
    model = cpu.get("model name", "")
    if "cpu family" in cpu and "model" in cpu:
        # Virtual machines of one vendor name differ ~2x in speed here ("Intel(R) Xeon(R) Processor" both):
        # family and model tell them apart.
        model += f" (family {cpu['cpu family']}, model {cpu['model']})"
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
    }


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        return ""


#: Fresh workers draining the pre-filled topic; the median is the figure.
WORKER_DRAINS = 3
#: Worker processes in one group for the scale-out drain: one Python thread does a worker's work (busy 96 %
#: of a drain, py-spy), so a second core helps only through a second process (two: 1.48-1.50x one, scratch
#: drains on fresh stacks, this suite's 200,000 changes).
SCALE_OUT_PROCESSES = 2

#: Cached keys a flush deletes under load (quick and full alike), and the e2e rate meanwhile.
FLUSH_KEYS = 1_000_000
FLUSH_LOAD_RATE = 200

#: Seconds of load per e2e rate: (quick, full).
E2E_SECONDS = {200: (15.0, 60.0), 2000: (10.0, 30.0)}
#: Seconds of unmeasured load at each rate before it is measured (quick, full): the relay's JVM compiles
#: Debezium's hot code in its first seconds under load, and again when the rate rises (bigger batches take
#: other paths): its C2 compiler thread took 0.25 of a core in the first seconds at 2,000/s after 10 s at
#: 200/s, 0.07 after 20 s more at 2,000/s (p99 206-358 ms vs 166 ms). A run that includes that measures the JIT.
E2E_WARMUP_SECONDS = (10.0, 20.0)
# All e2e rates run on the drains' stack, one after the other, and that is the better of the two ways tried
# on tansu. Its memory store lists every batch a partition holds on each fetch that finds data (tansu's CPU
# per produce -> fetch round trip: 1.4 ms at 300 batches, 7.5 ms at 5,900, 14.4 ms at 11,200; scratch
# ``tansufetch.py``, one partition), and the relay writes about a batch per poll whatever the rate, so the
# broker's cost grows with the seconds of load since it started. A fresh stack per rate starts the relay's
# JVM cold too: at 2,000/s after 10 s of warm-up its share was 0.56-0.68 of a core and the p99 207-366 ms,
# against 0.42-0.44 and 150-152 ms after this sequence's 35 s of earlier load (alternated scratch runs,
# ``seq.py``, two each; the broker took 0.39-0.40 of a core then, 0.26-0.33 fresh). Longer runs (the full
# run's 2,000/s after 100 s of load: p99 2,764 ms) measure the broker's age: Apache Kafka reads from an
# offset index.


def run(
    out: Path,
    *,
    quick: bool,
    progress: Progress,
    sizes: dict[str, int] | None = None,
    e2e_seconds: dict[int, float] | None = None,
    e2e_warmup: float | None = None,
    overhead_writes: int | None = None,
    overhead_rounds: int = 5,
) -> dict[str, Any]:
    """Measure and write ``out/results.json``, ``out/report.md`` and the plots; return the results."""
    from slotguard.dev.stack import DevStack

    sizes = sizes or (
        {"core": 200_000, "instructions": 5_000, "worker": 200_000, "naive": 200_000, "backlog": 250_000}
        if quick
        else {
            "core": 400_000,
            "instructions": 10_000,
            "worker": 400_000,
            "naive": 400_000,
            "backlog": 1_000_000,
        }
    )
    try:  # before minutes of measuring: a result that cannot be written is a bench that cannot run
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".slotguard-bench-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": commit(),
        "quick": quick,
        "sizes": sizes,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": _latency_settings(),
    }

    progress("core: keys and event JSON, and orjson.loads alone (a quiet process)")
    rates = measure_quietly(sizes["core"])
    rate, floor = rates.core, rates.orjson_loads
    results["core"] = {
        "events_per_s": round(rate),
        "orjson_loads_per_s": round(floor),
        "us_per_change": round(1e6 / rate, 2),
        "ratio_to_orjson": round(floor / rate, 2),
        "changes": sizes["core"],
    }
    if sizes.get("instructions"):
        progress(f"core: instructions per change under callgrind ({sizes['instructions']:,} changes)")
        results["core"]["instructions"] = instructions.measure(sizes["instructions"])

    progress(f"generating {max(sizes['worker'], sizes['naive']):,} synthetic changes")
    records = list(changes(max(sizes["worker"], sizes["naive"])))

    stack = DevStack(out / "stack")
    progress("starting the local stack (Postgres, tansu, Redis) and a Redis Cluster beside it")
    info = stack.up(infra_only=True).info
    cluster = contextlib.ExitStack()
    try:
        cluster_url = cluster.enter_context(_cluster_redis(out / "cluster"))
        base = _settings(info)
        topic = _prefilled(base, "worker", records[: sizes["worker"]], progress)
        # The median of WORKER_DRAINS fresh workers, each in its own group on the same topic: one drain of
        # a few seconds moved by a quarter between runs on this shared machine.
        drains = sorted(
            (_drain(topic, f"worker{i + 1}", worker_command(), out, progress) for i in range(WORKER_DRAINS)),
            key=lambda d: d.rate,
        )
        worker = drains[len(drains) // 2]
        on_cluster = (topic[0].model_copy(update={"redis_url": SecretStr(cluster_url)}), topic[1])
        cluster_drains = sorted(
            (
                _drain(on_cluster, f"cluster{i + 1}", worker_command(), out, progress)
                for i in range(WORKER_DRAINS)
            ),
            key=lambda d: d.rate,
        )
        on_nodes = cluster_drains[len(cluster_drains) // 2]
        # What WAIT costs: the same drain on the cluster without waiting for the replicas.
        no_wait = (on_cluster[0].model_copy(update={"redis_wait_replicas": 0}), on_cluster[1])
        unwaited = _drain(no_wait, "cluster-no-wait", worker_command(), out, progress)
        naive_topic = (
            topic
            if sizes["naive"] == sizes["worker"]
            else _prefilled(base, "naive", records[: sizes["naive"]], progress)
        )
        naive = _drain(naive_topic, "naive", naive_command(), out, progress)
        scaled = _drain(topic, f"workers{SCALE_OUT_PROCESSES}", worker_command(), out, progress,
                        processes=SCALE_OUT_PROCESSES)  # fmt: skip
        results["worker"] = {
            "events_per_s": round(worker.rate),
            "drain_rates": [round(d.rate) for d in drains],
            "baseline_events_per_s": round(naive.rate),
            "ratio_to_baseline": round(worker.rate / naive.rate, 1) if naive.rate else None,
            "rss_mb": round(max(d.rss_mb_peak for d in drains), 1),
            "baseline_rss_mb": round(naive.rss_mb_peak, 1),
            "changes": worker.records,
            "baseline_changes": naive.records,
            "partitions": 4,
            "cluster": {
                "events_per_s": round(on_nodes.rate),
                "drain_rates": [round(d.rate) for d in cluster_drains],
                "ratio_to_one_node": round(on_nodes.rate / worker.rate, 2) if worker.rate else None,
                "rss_mb": round(max(d.rss_mb_peak for d in cluster_drains), 1),
                "topology": "3 primaries, 1 replica each, WAIT 1",
                "without_wait_events_per_s": round(unwaited.rate),
            },
            "scale_out": {
                "processes": SCALE_OUT_PROCESSES,
                "events_per_s": round(scaled.rate),
                "ratio_to_one": round(scaled.rate / worker.rate, 2) if worker.rate else None,
                "rss_mb": round(scaled.rss_mb_peak, 1),
            },
        }
        _plot_drain(
            out / "drain.png",
            {"worker": worker, f"{SCALE_OUT_PROCESSES} worker processes": scaled, "naive agent": naive},
        )
        if sizes.get("backlog"):
            # Generated while it is produced: a million ~1 KB envelopes are not held in memory at once.
            backlog_topic = _prefilled(base, "backlog", changes(sizes["backlog"]), progress,
                                       total=sizes["backlog"])  # fmt: skip
            backlog = _drain(backlog_topic, "backlog", worker_command(), out, progress)
            results["backlog"] = {
                "changes": backlog.records,
                "seconds": round(backlog.seconds, 1),
                "events_per_s": round(backlog.rate),
                "rss_mb_start": round(backlog.rss_mb_start, 1),
                "rss_mb_peak": round(backlog.rss_mb_peak, 1),
                "rss_mb_end": round(backlog.rss_mb_end, 1),
            }
        seconds = e2e_seconds or {rate: pair[0 if quick else 1] for rate, pair in E2E_SECONDS.items()}
        warmup = E2E_WARMUP_SECONDS[0 if quick else 1] if e2e_warmup is None else e2e_warmup
        results["e2e_warmup_s"] = warmup
        writes = overhead_writes or (2000 if quick else 5000)
        results.update(
            _pipeline(
                stack, seconds, warmup, writes, overhead_rounds, out, progress, sizes.get("flush", FLUSH_KEYS)
            )
        )
        results["cluster_e2e"] = _on_cluster(stack, cluster_url, seconds, warmup, progress)
    finally:
        progress("stopping the local stack and the cluster")
        cluster.close()
        stack.down()
    if sizes.get("backlog", 0) < 1_000_000:
        results["not_measured"] = ["the 1M backlog (this run drained a smaller one; run without --quick)"]
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(report(results), encoding="utf-8")
    return results


def _pipeline(
    stack: DevStack,
    seconds: dict[int, float],
    warmup: float,
    writes: int,
    rounds: int,
    out: Path,
    progress: Progress,
    flush_keys: int,
) -> dict[str, Any]:
    """The whole pipeline with its shipped settings on ``stack`` (the drains' stack, now with the relay and
    the worker): e2e latency per rate with the cores in use meanwhile, RSS under load, write overhead."""
    from slotguard.bench.cpu import CpuMeter
    from slotguard.bench.overhead import write_overhead
    from slotguard.dev.procs import RssPeaks

    progress("starting the relay and the worker")
    info = stack.up().info
    pids = stack.pids()
    peaks = RssPeaks(pids)
    runs: dict[int, E2EResult] = {}
    with _Sampler(peaks):
        for rate, length in seconds.items():
            runs[rate] = _measure_rate(info, rate, length, warmup, CpuMeter(pids), progress)
    _plot_cdf(out / "e2e_cdf.png", runs)
    flush = _flush_under_load(info, flush_keys, progress)

    def relay_on() -> None:
        stack.up()

    def relay_off() -> None:
        stack.stop_relay()

    overhead = write_overhead(
        info.database_url,
        relay_on=relay_on,
        relay_off=relay_off,
        rounds=rounds,
        writes=writes,
        progress=progress,
    )
    return {
        "e2e": {str(rate): result.summary() for rate, result in runs.items()},
        "rss_mb": {"relay": peaks.peaks.get("relay"), "worker": peaks.peaks.get("worker")},
        "write_overhead": overhead,
        "flush": flush,
    }


def _loads(info: StackInfo) -> Callable[[], Load]:
    """A fresh e2e load generator for each run on the stack ``info`` describes."""
    from slotguard.bench.e2e import Load

    settings = _settings(info)
    config = core_config(settings)

    def load() -> Load:
        return Load(
            database_url=info.database_url,
            redis_url=info.redis_url,
            kafka_options={"bootstrap_servers": info.kafka_bootstrap},
            topic=settings.appointments_topic,
            config=config,
        )

    return load


@contextlib.contextmanager
def _cluster_redis(base: Path) -> Iterator[str]:
    """A Redis Cluster as `slotguard dev up --redis cluster` runs it, for the drains and e2e beside one node."""
    from slotguard.dev.parts import free_port
    from slotguard.dev.paths import StackPaths
    from slotguard.dev.redis import PORTS_NEEDED, redis_parts, redis_url

    paths = StackPaths.at(base)
    paths.ensure()
    ports = [free_port() for _ in range(PORTS_NEEDED["cluster"])]
    parts = redis_parts(paths, "cluster", ports)
    try:
        for part in parts:
            part.start()
        for part in parts:
            part.wait_ready()  # the last forms the cluster
        yield redis_url("cluster", ports)
    finally:
        for part in reversed(parts):
            part.stop()


def _on_cluster(
    stack: DevStack, cluster_url: str, seconds: dict[int, float], warmup: float, progress: Progress
) -> dict[str, Any]:
    """e2e latency per rate with the worker invalidating on the cluster (same relay, same topic)."""
    import dataclasses

    from slotguard.bench.cpu import CpuMeter

    # A fresh broker first: the local one walks a partition's whole history on each fetch, so a run after
    # the single node's e2e, flush and write-overhead runs would pay for their records (docs/stack.md).
    progress("restarting the stack (a fresh broker), then the worker on the Redis Cluster")
    stack.down()
    stack.up()
    stack.restart_worker({"SLOTGUARD_REDIS_URL": cluster_url})
    try:
        info = stack.info()
        assert info is not None
        on_cluster = dataclasses.replace(info, redis_url=cluster_url)
        return {
            str(rate): _measure_rate(
                on_cluster, rate, length, warmup, CpuMeter(stack.pids()), progress
            ).summary()
            for rate, length in seconds.items()
        }
    finally:
        stack.restart_worker({})


def _flush_under_load(info: StackInfo, keys: int, progress: Progress) -> dict[str, Any]:
    """A flush of ``keys`` cached keys while the pipeline takes :data:`FLUSH_LOAD_RATE` changes/s."""
    from slotguard.bench import flush

    settings = _settings(info)
    config = core_config(settings)
    load = _loads(info)

    figures, result = flush.run(
        info.redis_url, load, config.template, settings.redis_key_prefix, keys, FLUSH_LOAD_RATE,
        settings.flush_chunk, progress,
    )  # fmt: skip
    summary = result.summary()
    figures["e2e_during"] = {k: summary[k] for k in ("p50_ms", "p99_ms", "max_ms", "observed", "changes")}
    figures["e2e_rate"] = FLUSH_LOAD_RATE
    progress(
        f"flush: {figures['keys']:,} keys in {figures['seconds']} s ({figures['keys_per_s']:,} keys/s, "
        f"{figures['redis_commands_per_s']:,} Redis commands/s); e2e meanwhile p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms"
    )
    return figures


def _measure_rate(
    info: StackInfo, rate: int, length: float, warmup: float, cpu: CpuMeter, progress: Progress
) -> E2EResult:
    """One e2e rate on the running stack ``info`` describes: warm-up, then the measured run."""
    from slotguard.bench.e2e import measure

    load = _loads(info)

    if warmup > 0:
        progress(f"e2e: warming the pipeline up at {rate:g} changes/s for {warmup:g} s (not measured)")
        asyncio.run(measure(load(), rate, warmup))
    result = asyncio.run(measure(load(), rate, length, progress=progress, cpu=cpu))
    got = result.summary()
    progress(
        f"e2e at {rate}/s: p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms; {_cores_line(got['cpu_cores'])}"
    )
    return result


def _cores_line(cores: dict[str, float]) -> str:
    """``cores busy 1.9 (steal 0.1): relay 0.5, kafka 0.3, ...`` -- the processes by share, largest first."""
    if not cores:
        return "cores not metered"
    parts = sorted(((v, k) for k, v in cores.items() if k not in ("machine_busy", "steal")), reverse=True)
    return f"cores busy {cores['machine_busy']:g} (steal {cores['steal']:g}): " + ", ".join(
        f"{name} {value:g}" for value, name in parts
    )


class _Sampler:
    """Samples :class:`RssPeaks` every 0.5 s on a thread while the block runs."""

    def __init__(self, peaks: Any) -> None:
        import threading

        self._peaks = peaks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._peaks.sample()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _plot_cdf(path: Path, runs: dict[int, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, (rate, result) in zip(axes[0], runs.items(), strict=True):
        series = {"commit → key gone": result.latencies_ms(), **result.stage_ms()}
        for label, values in series.items():
            if values:
                ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of changes")
        ax.set_title(f"{rate} changes/s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _latency_settings() -> dict[str, Any]:
    defaults = Settings.model_fields
    names = ("poll_interval_ms", "batch_timeout", "kafka_fetch_max_wait_ms", "batch_size", "relay_heap_mb",
             "second_delete_after", "guard_window")  # fmt: skip
    return {f"SLOTGUARD_{name.upper()}": defaults[name].default for name in names}


def _settings(info: Any) -> Settings:
    from slotguard.dev.kafka import BROKER_SETTINGS

    return Settings(
        kafka_bootstrap=info.kafka_bootstrap,
        redis_url=info.redis_url,
        data_dir=info.data_dir,
        log_level="WARNING",
        **BROKER_SETTINGS,  # type: ignore[arg-type]
    )


def _prefilled(
    base: Settings, name: str, records: Any, progress: Progress, *, total: int | None = None
) -> tuple[Settings, int]:
    """A fresh 4-partition topic of ``records`` (and the services topic); its settings and record count."""
    prefix = f"bench_{name}_{int(time.time())}"
    settings = base.model_copy(
        update={
            "topic_prefix": prefix,
            "consumer_group": f"{prefix}_g",
            "events_topic": f"{prefix}.events",
            "dlq_topic": f"{prefix}.dlq",
        }
    )
    count = total if total is not None else len(records)
    progress(f"{name}: pre-filling {count:,} changes into 4 partitions")
    asyncio.run(
        prefill(settings.kafka_bootstrap, settings.appointments_topic, settings.services_topic, records, 4)
    )
    return settings, count


def _drain(
    topic: tuple[Settings, int],
    name: str,
    command: list[str],
    out: Path,
    progress: Progress,
    *,
    processes: int = 1,
) -> DrainResult:
    """Fresh processes (one unless told) in a fresh consumer group draining the pre-filled ``topic`` from
    its start."""
    from slotguard.dev.parts import free_port

    settings, count = topic
    settings = settings.model_copy(
        update={"consumer_group": f"{settings.topic_prefix}_{name}_g", "web_port": free_port()}
    )
    progress(f"{name}: draining")
    result = drain(command, settings, count, out / f"{name}.log", processes=processes)
    progress(f"{name}: {result.rate:,.0f} changes/s, RSS peak {result.rss_mb_peak:.0f} MB")
    return result


def _plot_drain(path: Path, runs: dict[str, DrainResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, result in runs.items():
        pts = result.progress
        rates = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in itertools.pairwise(pts) if t1 > t0]
        ax.plot([t for t, _ in rates], [r for _, r in rates], label=label)
    ax.set_xlabel("seconds since the first commit")
    ax.set_ylabel("changes committed per second")
    ax.set_title("Draining a pre-filled 4-partition topic")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# slotguard bench",
        "",
        f"`slotguard bench{' --quick' if results['quick'] else ''}` at commit `{results['commit']}`, {results['started']}.",
        f"Machine: {m['cores']} cores, {m['memory_mb']} MB, {m['cpu']}, Python {m['python']}. Absolute figures are this machine's; ratios are from this one run.",
        "",
        "| part | figure |",
        "|---|---|",
    ]
    core = results.get("core", {})
    if core:
        lines += [
            f"| core (keys and event JSON) | {core['events_per_s']:,} changes/s ({core['us_per_change']} µs/change) |",
            f"| orjson.loads alone | {core['orjson_loads_per_s']:,} /s (core is {core['ratio_to_orjson']}× slower) |",
        ]
        counted = core.get("instructions") or {}
        if "per_change" in counted:
            per = counted["per_change"]
            lines.append(
                f"| instructions per change (callgrind, {counted['changes']:,} changes) | core {per['core']:,}, "
                f"orjson.loads {per['orjson_loads']:,} ({counted['core_to_orjson']}×) |"
            )
        elif counted:
            lines.append(f"| instructions per change | not measured: {counted['not_measured']} |")
    worker = results.get("worker", {})
    if worker:
        lines += [
            f"| worker drain ({worker['changes']:,} changes, 4 partitions, Redis UNLINK; median of "
            f"{', '.join(f'{r:,}' for r in worker.get('drain_rates', []))}) | {worker['events_per_s']:,} changes/s, RSS peak {worker['rss_mb']} MB |",
            f"| naive Faust agent (one DEL per event, {worker['baseline_changes']:,} changes) | {worker['baseline_events_per_s']:,} changes/s, RSS peak {worker['baseline_rss_mb']} MB |",
            f"| worker / naive | {worker['ratio_to_baseline']}× |",
        ]
        on_cluster = worker.get("cluster")
        if on_cluster:
            lines.append(
                f"| worker drain on a Redis Cluster ({on_cluster['topology']}; median of "
                f"{', '.join(f'{r:,}' for r in on_cluster['drain_rates'])}) | {on_cluster['events_per_s']:,} changes/s "
                f"({on_cluster['ratio_to_one_node']}× one node), RSS peak {on_cluster['rss_mb']} MB |"
            )
            if "without_wait_events_per_s" in on_cluster:
                lines.append(
                    f"| … the same without WAIT (one drain) | {on_cluster['without_wait_events_per_s']:,} changes/s |"
                )
        scale = worker.get("scale_out")
        if scale:
            lines.append(
                f"| {scale['processes']} worker processes in one group (the same topic) | "
                f"{scale['events_per_s']:,} changes/s ({scale['ratio_to_one']}× one), RSS peak {scale['rss_mb']} MB each at most |"
            )
    for rate, e2e in results.get("e2e", {}).items():
        p50s = e2e["stages_p50_ms"]
        warm = (
            f", after {results['e2e_warmup_s']:g} s of warm-up at that rate"
            if results.get("e2e_warmup_s")
            else ""
        )
        lines.append(
            f"| e2e at {rate}/s (achieved {e2e['achieved_rate']}/s, {e2e['observed']}/{e2e['changes']} observed, "
            f"{e2e['unobserved_still_cached']} still cached at the end{warm}) | "
            f"p50 {e2e['p50_ms']} ms, p95 {e2e['p95_ms']} ms, p99 {e2e['p99_ms']} ms, max {e2e['max_ms']} ms; "
            f"stage p50s: commit→Debezium {p50s['commit_to_debezium']}, Debezium→Kafka {p50s['debezium_to_kafka']}, "
            f"Kafka→UNLINK {p50s['kafka_to_unlink']} ms |"
        )
        if e2e.get("cpu_cores"):
            lines.append(f"| cores in use during e2e at {rate}/s | {_cores_line(e2e['cpu_cores'])} |")
    for rate, e2e in results.get("cluster_e2e", {}).items():
        lines.append(
            f"| e2e at {rate}/s on the Redis Cluster (achieved {e2e['achieved_rate']}/s, {e2e['observed']}/"
            f"{e2e['changes']} observed, {e2e['unobserved_still_cached']} still cached) | p50 {e2e['p50_ms']} ms, "
            f"p95 {e2e['p95_ms']} ms, p99 {e2e['p99_ms']} ms, max {e2e['max_ms']} ms |"
        )
    backlog = results.get("backlog")
    if backlog:
        lines.append(
            f"| backlog of {backlog['changes']:,} changes (worker) | drained in {backlog['seconds']} s "
            f"({backlog['events_per_s']:,}/s); RSS {backlog['rss_mb_start']} MB at the first commit, peak "
            f"{backlog['rss_mb_peak']} MB, {backlog['rss_mb_end']} MB at the end |"
        )
    rss = results.get("rss_mb")
    if rss:
        lines.append(f"| RSS under e2e load | relay {rss['relay']} MB, worker {rss['worker']} MB |")
    overhead = results.get("write_overhead")
    if overhead:
        lines.append(
            f"| write overhead (median INSERT/UPDATE, relay streaming / stopped, {overhead['rounds']} interleaved rounds) | "
            f"{overhead['ratio']}× ({overhead['median_ms_streaming']} ms vs {overhead['median_ms_stopped']} ms; "
            f"per round {', '.join(f'{r}×' for r in overhead.get('round_ratios', []))}) |"
        )
    flush = results.get("flush")
    if flush:
        during = flush["e2e_during"]
        lines.append(
            f"| flush of {flush['keys']:,} cached keys (SCAN COUNT {flush['chunk']} + UNLINK, no rate limit) while "
            f"the pipeline takes {flush['e2e_rate']} changes/s | {flush['seconds']} s ({flush['keys_per_s']:,} keys/s, "
            f"{flush['redis_commands_per_s']:,} Redis commands/s); e2e meanwhile p50 {during['p50_ms']} ms, "
            f"p99 {during['p99_ms']} ms, max {during['max_ms']} ms ({during['observed']}/{during['changes']} observed) |"
        )
    if results.get("settings"):
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| `{name}` | {value} |" for name, value in results["settings"].items()]
    if results.get("not_measured"):
        lines += [
            "",
            "Not measured by this version of the suite: " + ", ".join(results["not_measured"]) + ".",
        ]
    lines += ["", "![drain](drain.png)", ""]
    if results.get("e2e"):
        lines += ["![e2e latency CDF per stage](e2e_cdf.png)", ""]
    return "\n".join(lines)
