"""A batch of latencies observed at once is exposed as the same observations one by one would be."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from processor.worker.metrics import LATENCY_BUCKETS, BatchHistogram


def _samples(histogram: BatchHistogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for m in histogram.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def _pair() -> tuple[BatchHistogram, BatchHistogram]:
    return tuple(  # type: ignore[return-value]
        BatchHistogram("h", "h", buckets=LATENCY_BUCKETS, registry=CollectorRegistry()) for _ in range(2)
    )


# Bounds themselves, just around them and far outside: where a bucket search can be off by one.
_EDGES = st.sampled_from([b for x in LATENCY_BUCKETS for b in (x, x - 1e-9, x + 1e-9)] + [0.0, -1.0, 1e9])
_AMOUNTS = st.lists(st.one_of(_EDGES, st.floats(-10, 1e4, allow_nan=False)), max_size=60)


@given(st.lists(_AMOUNTS, max_size=4))
def test_observe_many_exposes_what_observe_one_by_one_does(batches: list[list[float]]) -> None:
    one_by_one, batched = _pair()
    for batch in batches:
        for amount in batch:
            one_by_one.observe(amount)
        batched.observe_many(batch)
    expected, got = _samples(one_by_one), _samples(batched)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-6 * max(1.0, abs(value)), key


def test_an_empty_batch_observes_nothing() -> None:
    one_by_one, batched = _pair()
    batched.observe_many([])
    assert _samples(batched) == _samples(one_by_one)
