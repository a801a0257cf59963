"""GCRA (generic cell rate algorithm): a token bucket kept as one number, sans-IO.

The state of a bucket is its *theoretical arrival time* (TAT): the time at which the bucket
would be empty again if nothing else arrived. A request costing ``n`` is allowed when
``max(tat, now) + n·T - τ <= now`` with ``T = 1/rate`` (emission interval) and ``τ = burst·T``
(how far ahead of schedule a sender may run). Allowing it moves TAT to ``max(tat, now) + n·T``.

The engine's one GCRA. Two Lua scripts implement the same arithmetic inside Redis
and are checked against this reference: shaping's ``engine/shaping/lua/acquire.lua`` (one unit
per message at each level; tests/integration/test_shaping_limiter.py) and the per-key enqueue
limit's ``engine/keys/lua/gcra_take.lua`` (``n`` units per request, all or nothing;
tests/security/test_key_ratelimit_gcra.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

#: A function returning "now" in seconds (``time.time``, or a fake clock in tests).
Clock = Callable[[], float]


class GcraLimit(msgspec.Struct, frozen=True):
    """A rate (units per second) with a burst (units allowed at once from idle)."""

    rate_per_s: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError(f"GCRA rate must be > 0, got {self.rate_per_s}")
        if self.burst < 1:
            raise ValueError(f"GCRA burst must be >= 1, got {self.burst}")

    @property
    def interval_s(self) -> float:
        """T: seconds between two units at the steady rate."""
        return 1.0 / self.rate_per_s

    @property
    def tolerance_s(self) -> float:
        """τ: how far ahead of the steady schedule the bucket may run."""
        return self.burst * self.interval_s

    @classmethod
    def from_rate(cls, rate_per_s: float, burst_s: float) -> GcraLimit:
        """A limit whose burst is ``burst_s`` seconds' worth of its rate, at least one unit."""
        return cls(rate_per_s=rate_per_s, burst=burst_for(rate_per_s, burst_s))


def burst_for(rate_per_s: float, burst_s: float) -> int:
    """Burst size for a rate: ``burst_s`` seconds' worth, at least 1 (same rule as the Lua)."""
    return max(1, math.floor(rate_per_s * burst_s))


class GcraResult(msgspec.Struct, frozen=True):
    """Outcome of one check: the new TAT (unchanged when denied) and the wait when denied."""

    allowed: bool
    tat: float
    retry_after_s: float


def gcra_check(tat: float | None, now: float, limit: GcraLimit, cost: int = 1) -> GcraResult:
    """Decide one request against a bucket whose state is ``tat`` (``None``: never used)."""
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * limit.interval_s
    allow_at = new_tat - limit.tolerance_s
    if allow_at > now:
        # Denied: nothing is consumed, so a held request never eats capacity it did not use.
        return GcraResult(allowed=False, tat=base, retry_after_s=allow_at - now)
    return GcraResult(allowed=True, tat=new_tat, retry_after_s=0.0)


def gcra_refund(tat: float, limit: GcraLimit, cost: int = 1) -> float:
    """Give back ``cost`` units taken earlier (a later level of the hierarchy said no)."""
    return tat - cost * limit.interval_s


class GcraBucket:
    """An in-memory bucket over an injectable clock, for tests and single-process tools."""

    def __init__(self, limit: GcraLimit, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._tat: float | None = None

    def try_acquire(self, cost: int = 1) -> GcraResult:
        result = gcra_check(self._tat, self._clock(), self.limit, cost)
        if result.allowed:
            self._tat = result.tat
        return result
