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
