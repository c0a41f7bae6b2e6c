"""The benchmark's pure parts: the workload is the promised mix, and the report renders every figure."""

from __future__ import annotations

import collections
from pathlib import Path

import orjson
import pytest

from slotguard.bench import instructions
from slotguard.bench.core_bench import core_rates, measure_quietly
from slotguard.bench.errors import BenchError
from slotguard.bench.run import report
from slotguard.bench.workload import changes
from slotguard.cli import main
from slotguard.settings import default_settings
from slotguard.wiring import core_config


def test_the_workload_is_the_promised_mix_of_about_1_kb_envelopes() -> None:
    batch = list(changes(5000))
    kinds = collections.Counter(c.kind for c in batch)
    assert 0.37 < kinds["create"] / 5000 < 0.43
    assert kinds["reschedule"]
    assert kinds["cancel"]
    assert kinds["noise"]
    assert kinds["soft_delete"]
    assert kinds["delete"]
    sizes = sorted(len(c.value) for c in batch)
    assert 700 < sizes[len(sizes) // 2] < 1800
    assert list(changes(50)) == list(changes(50))  # seeded


def test_the_core_and_orjson_rates_are_measured_on_tiny_inputs() -> None:
    values = [c.value for c in changes(200)]
    config = core_config(default_settings())
    rates = core_rates(values, config, rounds=1)
    assert rates.core > 0
    assert rates.orjson_loads > 0


def test_the_core_part_is_measured_in_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's figures come from a child process without its progress display; a failing child is one
    error naming the child's last line."""
    rates = measure_quietly(200)
    assert rates.core > 0
    assert rates.orjson_loads > 0
    monkeypatch.setenv("SLOTGUARD_KEY_TIMEZONE", "Nowhere/Atlantis")  # the child's settings refuse it
    with pytest.raises(BenchError, match=r"the core part exited with 1: .*Atlantis"):
        measure_quietly(200)


def test_an_output_directory_that_cannot_be_written_is_one_error_line_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    assert main(["bench", "--quick", "--out", str(taken / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"slotguard bench: error: cannot write the results to {taken / 'out'}: "), err
    assert len(err.splitlines()) == 1, err


def test_the_report_names_the_machine_and_every_figure() -> None:
    results = {
        "machine": {"cores": 2, "memory_mb": 24000, "cpu": "cpu", "python": "3.11"},
        "commit": "abc",
        "quick": True,
        "started": "now",
        "core": {
            "events_per_s": 1,
            "orjson_loads_per_s": 2,
            "us_per_change": 3.0,
            "ratio_to_orjson": 2.0,
            "instructions": {
                "changes": 50,
                "per_change": {"orjson_loads": 27_001, "core": 43_002},
                "core_to_orjson": 1.59,
            },
        },
        "worker": {
            "events_per_s": 10,
            "baseline_events_per_s": 1,
            "ratio_to_baseline": 10.0,
            "rss_mb": 90.0,
            "baseline_rss_mb": 80.0,
            "changes": 5,
            "baseline_changes": 5,
            "scale_out": {"processes": 2, "events_per_s": 17, "ratio_to_one": 1.7, "rss_mb": 91.0},
        },
        "not_measured": ["e2e latency"],
    }
    text = report(orjson.loads(orjson.dumps(results)))
    for needle in ("2 cores", "`abc`", "changes/s", "10.0×", "Not measured", "drain.png", "core 43,002",
                   "2 worker processes in one group", "(1.7× one)"):  # fmt: skip
        assert needle in text
    results["core"]["instructions"] = {"not_measured": "valgrind is not installed"}  # type: ignore[index]
    assert "not measured: valgrind is not installed" in report(results)


def test_e2e_latency_counts_a_deletion_before_the_clients_return_as_zero() -> None:
    """A sentinel deleted before the client's commit call returned is observed (0 ms), one whose commit
    never returned is not counted, and the unobserved counts are reported."""
    from slotguard.bench.e2e import E2EResult, Sample

    samples = [
        Sample("a", commit_wall=10.0, gone_wall=10.02),
        Sample("b", commit_wall=10.0, gone_wall=9.99),
        Sample("c", gone_wall=10.0),
        Sample("d", commit_wall=10.0),
    ]
    result = E2EResult(rate=1, achieved=1, samples=samples, unobserved_gone=0, unobserved_cached=1)
    assert result.latencies_ms() == [0.0, pytest.approx(20.0)]
    summary = result.summary()
    assert (summary["observed"], summary["unobserved_still_cached"]) == (2, 1)


def test_the_load_generator_caches_each_sentinel_before_its_change_commits_and_batches_the_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every change's sentinel is cached before the change is sent to Postgres, and the changes due at one
    wake-up share one Redis round trip (at 5,000/s the generator wakes less often than once a change)."""
    import asyncio
    from typing import Any

    from slotguard.bench import e2e

    log: list[tuple[str, object]] = []

    class Pipe:
        """A key counts as cached once its round trip returned, not when it was queued."""

        def __init__(self) -> None:
            self.queued: list[str] = []

        async def __aenter__(self) -> Pipe:
            return self

        async def __aexit__(self, *_exc: object) -> None:
            return None

        def set(self, key: str, value: bytes, ex: int) -> None:
            self.queued.append(key)

        async def execute(self) -> None:
            await asyncio.sleep(0)  # a round trip lets other tasks run, as the real one does
            log.append(("round trip", None))
            log.extend(("set", key) for key in self.queued)

    class Cache:
        def pipeline(self, transaction: bool) -> Pipe:
            return Pipe()

        async def aclose(self) -> None:
            return None

    ids = iter(range(1, 10_000))

    class Conn:
        async def first_value(self, name: bytes, params: Any) -> bytes:
            return str(next(ids)).encode()

        def close(self) -> None:
            return None

    async def connect(*_a: object) -> Conn:
        return Conn()

    load = e2e.Load(
        database_url="postgresql://x", redis_url="redis://x", kafka_options={}, topic="t",
        config=core_config(default_settings()), connect=connect,
    )  # fmt: skip
    monkeypatch.setattr(load, "_cache", Cache)
    committed: list[str] = []
    real_commit = load.commit

    async def commit(conn: Any, change: Any) -> None:
        committed.append(change.sample.key)
        log.append(("commit", change.sample.key))
        await real_commit(conn, change)

    monkeypatch.setattr(load, "commit", commit)
    achieved = asyncio.run(load.generate(5000, 0.2, connections=4))

    cached_at = {key: i for i, (what, key) in enumerate(log) if what == "set"}
    sent_at = {key: i for i, (what, key) in enumerate(log) if what == "commit"}
    assert len(committed) == len(load.samples) == 1000
    assert all(cached_at[key] < sent_at[key] for key in committed)
    assert sum(1 for what, _ in log if what == "round trip") < len(committed) / 2
    assert achieved > 0


def test_callgrind_parts_are_read_in_dump_order(tmp_path: Path) -> None:
    """The parts' totals come back in dump order (numbered files only; 10 after 9)."""
    for number, total in ((1, 5), (2, 7), (10, 40), (9, 30)):
        (tmp_path / f"callgrind.out.{number}").write_bytes(
            f"# callgrind format\nevents: Ir\nsummary: {total}\ntotals: {total}\n".encode()
        )
    (tmp_path / "callgrind.out").write_bytes(b"summary: 999\n")
    assert instructions.parse_parts(list(tmp_path.iterdir())) == [5, 7, 30, 40]


def test_the_instruction_passes_run_on_tiny_inputs() -> None:
    """Each measured pass runs in-process (what the child runs under callgrind)."""
    runs = instructions.passes(30)
    assert list(runs) == list(instructions.PASSES)
    for run in runs.values():
        run()


def test_without_valgrind_the_instruction_count_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """No valgrind: the part is not measured, and says so."""
    monkeypatch.setattr("shutil.which", lambda _name: None)
    assert instructions.measure(10) == {"not_measured": "valgrind is not installed"}


def test_a_change_is_rescheduled_or_cancelled_only_once_its_last_sentinel_went_long_enough_ago() -> None:
    """The next change of an appointment must not come while the worker may still delete its last change's
    keys (a second delete follows the first): the wait counts from the observed deletion, so pipeline lag
    cannot make a commit look settled."""
    import time

    from slotguard.bench import e2e

    load = e2e.Load(
        database_url="postgresql://x", redis_url="redis://x", kafka_options={}, topic="t",
        config=core_config(default_settings()),
    )  # fmt: skip
    now = time.time()
    long_ago = now - 10 * e2e.SETTLED_S
    lagging = e2e.Sample("lagging", commit_wall=long_ago)  # committed long ago, not deleted yet
    just_gone = e2e.Sample("just gone", commit_wall=long_ago, gone_wall=now - e2e.SETTLED_S / 2)
    settled = e2e.Sample("settled", commit_wall=long_ago, gone_wall=now - 2 * e2e.SETTLED_S)
    for sample, expected in ((lagging, None), (just_gone, None), (settled, 0)):
        load.live = [(1, 1, sample)]
        assert load._settled() == expected, sample.key
