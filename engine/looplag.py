"""Event-loop lag: how late a 10 ms ticker wakes, reported as the worst lag of each second.

A ticker that sleeps 10 ms and measures how late it wakes sees every stall longer than a tick,
wherever it falls (a 0.5 s sleep only sees the stalls that overlap its own wake-up). The gauge
``engine_event_loop_lag_seconds`` holds the worst lag of the last completed one-second window,
so a scrape every few seconds misses no stall of more than a second and a scrape at least once
a second misses none; the histogram ``engine_event_loop_stall_seconds`` counts stalls by size.

On a host busier than its cores a ticker also wakes late because its thread waited for a CPU.
That wait (the kernel's run-queue time for the thread, ``/proc/thread-self/schedstat``) is
taken out of the lag and published on its own as ``engine_event_loop_cpu_wait_seconds``: the
lag says the engine's own work or a blocking call held the loop, the CPU wait says the host is
short of CPU. Where the file is missing the lag is the raw one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine import metrics

TICK_S = 0.01
WINDOW_S = 1.0
#: Lags below this are scheduling noise, not stalls (not put in the histogram).
STALL_FLOOR_S = 0.005


class LagWindow:
    """Worst lag per window (sans-IO: fed tick times, returns a finished window's worst)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._start: float | None = None
        self._worst = 0.0

    def tick(self, now: float, lag: float) -> float | None:
        """Record one tick's lag; returns the worst lag of a window that ``now`` ends, or None."""
        if self._start is None:
            self._start = now
        self._worst = max(self._worst, lag)
        if now - self._start < self.window_s:
            return None
        worst, self._worst, self._start = self._worst, 0.0, now
        return worst


def cpu_wait_s() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (0 if unknown)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def monitor(
    clock: Callable[[], float] = time.perf_counter, cpu_wait: Callable[[], float] = cpu_wait_s
) -> None:
    """Run forever: tick every :data:`TICK_S`, publish each window's worst lag (less the
    time the loop waited for a CPU) and worst CPU wait."""
    window, waits = LagWindow(), LagWindow()
    # One schedstat read per tick: what the thread waited between the last tick's read and
    # this tick's start is the monitor's own few microseconds.
    waited = cpu_wait()
    while True:
        start = clock()
        await asyncio.sleep(TICK_S)
        now, total = clock(), cpu_wait()
        wait, waited = max(0.0, total - waited), total
        lag = max(0.0, now - start - TICK_S - wait)
        if lag >= STALL_FLOOR_S:
            metrics.LOOP_STALLS.observe(lag)
        worst = window.tick(now, lag)
        if worst is not None:
            metrics.LOOP_LAG.set(worst)
        worst_wait = waits.tick(now, wait)
        if worst_wait is not None:
            metrics.LOOP_CPU_WAIT.set(worst_wait)
