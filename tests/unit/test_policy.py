"""The failure policy: every named behaviour, one test each."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter

from processor.core.errors import MalformedChange
from processor.worker.errors import PublishFailed, RecordFailed, RedisUnavailable, ServiceLookupFailed
from processor.worker.policy import Action, Backoff, FailurePolicy, action_for, record_error


def _counter(name: str) -> Counter:
    return Counter(name, name, registry=CollectorRegistry())


def _policy(waits: list[float], now: list[float] | None = None) -> FailurePolicy:
    clock = now if now is not None else [0.0]

    async def sleep(delay: float) -> None:
        waits.append(delay)
        clock[0] += delay

    return FailurePolicy(
        retries={"redis": _counter("r"), "kafka": _counter("k"), "postgres": _counter("p")},
        backoffs={"redis": Backoff(initial=1.0, maximum=4.0)},
        unhealthy_after=5.0,
        sleep=sleep,
        clock=lambda: clock[0],
    )


def test_backoff_doubles_and_is_capped() -> None:
    backoff = Backoff(initial=0.1, factor=2.0, maximum=1.0)
    assert [backoff.delay(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(10_000) == 1.0


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (MalformedChange("x"), Action.DEAD_LETTER),
        (RedisUnavailable("x"), Action.RETRY),
        (PublishFailed("x"), Action.RETRY),
        (ServiceLookupFailed("x"), Action.DEGRADE),
        (KeyError("x"), Action.CRASH),  # outside one record's handling: a bug of the worker
    ],
)
def test_each_error_category_has_its_named_behaviour(error: BaseException, action: Action) -> None:
    assert action_for(error) is action


@pytest.mark.parametrize(
    "error",
    [RecursionError("deep"), MemoryError(), OverflowError("big"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
     ValueError("a library's"), AttributeError("a bug"), KeyError("x")],
)  # fmt: skip
def test_any_exception_raised_while_one_record_is_handled_dead_letters_that_record(error: Exception) -> None:
    assert action_for(error, in_record=True) is Action.DEAD_LETTER
    dead = record_error(error)
    assert isinstance(dead, RecordFailed)
    assert dead.error_class == type(error).__name__
    assert str(dead).startswith(type(error).__name__)


def test_an_input_error_is_dead_lettered_as_it_is() -> None:
    error = MalformedChange("not JSON")
    assert record_error(error) is error


def test_a_multi_line_message_becomes_one_short_line() -> None:
    dead = record_error(ValueError("first line\nsecond line" + "x" * 10_000))
    assert str(dead) == "ValueError: first line"
    assert len(str(record_error(ValueError("y" * 10_000)))) < 400


@pytest.mark.parametrize(
    "error", [RedisUnavailable("down"), PublishFailed("no ack"), ServiceLookupFailed("pg")]
)
def test_a_dependency_error_while_a_record_is_handled_is_not_the_records_fault(error: Exception) -> None:
    assert action_for(error, in_record=True) is not Action.DEAD_LETTER
    with pytest.raises(type(error)):
        record_error(error)


@pytest.mark.parametrize("error", [asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1)])
def test_cancellation_and_exits_are_the_workers_not_the_records(error: BaseException) -> None:
    assert action_for(error, in_record=True) is Action.CRASH
    with pytest.raises(type(error)):
        record_error(error)


def test_retry_keeps_trying_a_dependency_until_it_answers() -> None:
    waits: list[float] = []
    answers: list[BaseException | int] = [RedisUnavailable("down"), RedisUnavailable("down"), 7]

    async def attempt() -> int:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert asyncio.run(_policy(waits).retry("redis", attempt)) == 7
    assert waits == [1.0, 2.0]


def test_retry_does_not_swallow_an_error_it_must_not_retry() -> None:
    async def attempt() -> int:
        raise ServiceLookupFailed("not a retry case")

    with pytest.raises(ServiceLookupFailed):
        asyncio.run(_policy([]).retry("redis", attempt))


def test_retry_ends_when_its_task_is_cancelled_and_returns_nothing() -> None:
    async def attempt() -> int:
        raise RedisUnavailable("down")

    async def main() -> None:
        policy = FailurePolicy(
            retries={}, backoffs={"redis": Backoff(initial=0.01, maximum=0.01)}, unhealthy_after=30.0
        )
        task = asyncio.create_task(policy.retry("redis", attempt))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_degrade_returns_the_fallback_on_a_lookup_failure() -> None:
    async def attempt() -> str:
        raise ServiceLookupFailed("postgres down")

    assert asyncio.run(_policy([]).degrade("postgres", attempt, "fallback")) == "fallback"


def test_a_dependency_failing_longer_than_the_limit_is_reported_unhealthy_until_it_recovers() -> None:
    now = [0.0]
    waits: list[float] = []
    policy = _policy(waits, now)
    calls = iter([RedisUnavailable("down")] * 4 + [1])

    async def attempt() -> int:
        answer = next(calls)
        if isinstance(answer, BaseException):
            assert policy.unhealthy() == ([] if now[0] < 5.0 else ["redis"])
            raise answer
        assert policy.unhealthy() == ["redis"]  # 1 + 2 + 4 + 4 = 11 s of failing
        return answer

    asyncio.run(policy.retry("redis", attempt))
    assert policy.unhealthy() == []


def test_the_source_is_stalled_after_a_quiet_spell_and_fine_again_on_the_next_heartbeat() -> None:
    from processor.worker.source_watch import SourceWatch
    from schemas.connections import KafkaConnection

    now = [0.0]
    watch = SourceWatch(kafka=KafkaConnection(), topic="hb", stall_after=60.0, clock=lambda: now[0])
    now[0] = 59.0
    assert not watch.stalled()  # counted from start until the first heartbeat
    now[0] = 61.0
    assert watch.stalled()
    watch.seen()
    assert not watch.stalled()
    now[0] = 122.0
    assert watch.stalled()
