"""The event-loop lag monitor: the worst lag per window, and a real stall seen by the ticker."""

from __future__ import annotations

import asyncio
import time

from engine import looplag, metrics


def test_window_reports_the_worst_lag_once_per_window() -> None:
    window = looplag.LagWindow(window_s=1.0)
    assert window.tick(0.0, 0.001) is None
    assert window.tick(0.3, 0.120) is None
    assert window.tick(0.6, 0.002) is None
    assert window.tick(1.0, 0.003) == 0.120
    # A new window starts clean: the old worst does not linger.
    assert window.tick(1.5, 0.004) is None
    assert window.tick(2.0, 0.001) == 0.004


async def test_monitor_sees_a_stall_in_the_middle_of_a_window() -> None:
    before = metrics.LOOP_STALLS.collect()[0]
    count0 = next(s.value for s in before.samples if s.name.endswith("_count"))
    task = asyncio.create_task(looplag.monitor())
    await asyncio.sleep(0.05)
    time.sleep(0.08)  # a stall on the loop thread, between two ticks
    await asyncio.sleep(1.1)
    task.cancel()
    after = metrics.LOOP_STALLS.collect()[0]
    count1 = next(s.value for s in after.samples if s.name.endswith("_count"))
    assert count1 > count0
    # The gauge holds a window's worst: the 80 ms stall, give or take the tick.
    assert metrics.LOOP_LAG._value.get() >= 0.06


async def test_time_waiting_for_a_cpu_is_not_lag() -> None:
    """A tick late only because its thread waited for a CPU (scripted run-queue clock): the
    lag gauge stays low and the wait is published on its own."""
    waited = [0.0]

    def cpu_wait() -> float:
        return waited[0]

    task = asyncio.create_task(looplag.monitor(cpu_wait=cpu_wait))
    await asyncio.sleep(0.05)
    waited[0] += 0.2  # 200 ms of run-queue wait accounted to the next tick...
    time.sleep(0.2)  # ...which wakes 200 ms late
    await asyncio.sleep(1.1)
    task.cancel()
    assert metrics.LOOP_LAG._value.get() < 0.05
    assert metrics.LOOP_CPU_WAIT._value.get() >= 0.15


def test_the_kernel_reports_run_queue_wait_for_this_thread() -> None:
    first = looplag.cpu_wait_s()
    assert first >= 0.0
    assert looplag.cpu_wait_s() >= first
