"""The clock the sans-IO shaping maths take: seconds as a float, injectable in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

#: A function returning "now" in seconds; ``time.time`` in production (wall clock, because
#: daily warm-up caps follow UTC days), a :class:`FakeClock` in tests.
Clock = Callable[[], float]

SECONDS_PER_DAY = 86400


def system_clock() -> float:
    """Wall-clock seconds since the epoch."""
    return time.time()


def utc_day(now: float) -> int:
    """Days since the epoch (UTC) for a timestamp: the key of daily counters."""
    return int(now // SECONDS_PER_DAY)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
