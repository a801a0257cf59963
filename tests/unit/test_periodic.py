"""The periodic-task runner: intervals, wake-ups, back-off after failures, final calls, metrics."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from engine import metrics
from engine.periodic import Periodic, Retry, Runner, run_until


def sample(metric: object, task: str) -> float:
    return metrics.labelled(metric, task)._value.get()  # type: ignore[attr-defined, no-any-return]


async def test_runs_at_start_then_every_interval() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        calls.append(loop.time())

    halt = asyncio.Event()
    runner = Runner([Periodic("t-interval", tick, 0.05)], halt)
    runner.start()
    await asyncio.sleep(0.18)
    await runner.stop()
    assert 3 <= len(calls) <= 5
    assert calls[1] - calls[0] == pytest.approx(0.05, abs=0.03)
    assert sample(metrics.TASK_RUNS, "t-interval") == len(calls)


async def test_not_at_start_waits_one_interval() -> None:
    calls: list[int] = []

    async def tick() -> None:
        calls.append(1)

    halt = asyncio.Event()
    task = asyncio.create_task(run_until(Periodic("t-late", tick, 0.2, at_start=False), halt))
    await asyncio.sleep(0.1)
    assert calls == []
    halt.set()
    await task


async def test_wake_runs_early_and_returned_delay_overrides_interval() -> None:
    wake = asyncio.Event()
    backlog = [0.0, 0.0, None]  # two "go on at once" rounds, then the interval
    calls: list[int] = []

    async def tick() -> float | None:
        calls.append(1)
        return backlog.pop(0) if backlog else None

    halt = asyncio.Event()
    task = asyncio.create_task(run_until(Periodic("t-wake", tick, 60.0, wake=wake), halt))
    await asyncio.sleep(0.05)
    assert len(calls) == 3  # the start-up call and the backlog, without waiting
    wake.set()
    await asyncio.sleep(0.05)
    assert len(calls) == 4  # woken long before the 60 s interval
    halt.set()
    await task


async def test_failure_is_logged_counted_and_backed_off(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def broken() -> None:
        calls.append(loop.time())
        raise RuntimeError("database away")

    halt = asyncio.Event()
    task = Periodic("t-broken", broken, 60.0, retry_s=0.02, max_backoff_s=0.08)
    assert [task.retry_after(n) for n in (1, 2, 3, 4, 9)] == [0.02, 0.04, 0.08, 0.08, 0.08]
    with caplog.at_level(logging.WARNING, logger="engine.periodic"):
        running = asyncio.create_task(run_until(task, halt))
        await asyncio.sleep(0.2)
        halt.set()
        await running
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) >= 3 and gaps[1] > gaps[0]  # the wait doubles
    assert sample(metrics.TASK_ERRORS, "t-broken") == len(calls)
    record = caplog.records[0]
    assert record.getMessage() == "background task failed; retrying"
    assert getattr(record, "task") == "t-broken"  # noqa: B009
    assert getattr(record, "error") == "database away"  # noqa: B009


async def test_retry_is_counted_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async def quiet() -> None:
        raise Retry

    halt = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="engine.periodic"):
        running = asyncio.create_task(run_until(Periodic("t-retry", quiet, 0.01), halt))
        await asyncio.sleep(0.05)
        halt.set()
        await running
    assert sample(metrics.TASK_ERRORS, "t-retry") >= 2
    assert not caplog.records


async def test_stop_cancels_then_makes_final_calls_in_order() -> None:
    order: list[str] = []
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)  # cancelled by stop()

    def final(name: str) -> Periodic:
        async def call() -> None:
            order.append(name)

        return Periodic(name, call, 60.0, at_start=False, on_stop=True)

    runner = Runner([Periodic("t-slow", slow, 60.0), final("t-first"), final("t-second")])
    runner.start()
    await started.wait()
    await asyncio.wait_for(runner.stop(), 1.0)
    assert order == ["t-first", "t-second"]


async def test_final_calls_are_time_limited(caplog: pytest.LogCaptureFixture) -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    runner = Runner([Periodic("t-hangs", hangs, 60.0, at_start=False, on_stop=True)])
    runner.start()
    with caplog.at_level(logging.WARNING, logger="engine.periodic"):
        await asyncio.wait_for(runner.stop(timeout_s=0.05), 1.0)
    assert "final background work cut short" in caplog.text


def test_names_are_unique() -> None:
    async def nothing() -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        Runner([Periodic("same", nothing, 1.0), Periodic("same", nothing, 1.0)])


async def test_interval_is_read_before_every_wait() -> None:
    every = [0.01]
    calls: list[int] = []

    async def tick() -> None:
        calls.append(1)

    halt = asyncio.Event()
    running = asyncio.create_task(run_until(Periodic("t-live", tick, lambda: every[0]), halt))
    await asyncio.sleep(0.05)
    assert len(calls) >= 2
    every[0] = 60.0  # a reload lengthened it: the wait after the next call uses it
    await asyncio.sleep(0.03)
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen
    halt.set()
    await running
