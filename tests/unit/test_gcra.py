"""GCRA maths with a fake clock: exact burst, exact steady rate, nothing consumed when held."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.gcra import GcraBucket, GcraLimit, burst_for, gcra_check, gcra_refund
from engine.shaping.clock import FakeClock


def test_burst_then_exact_spacing() -> None:
    clock = FakeClock(0.0)
    bucket = GcraBucket(GcraLimit(rate_per_s=10, burst=5), clock)
    assert all(bucket.try_acquire().allowed for _ in range(5))
    held = bucket.try_acquire()
    assert not held.allowed
    assert held.retry_after_s == pytest.approx(0.1)
    clock.advance(0.0999)
    assert not bucket.try_acquire().allowed
    clock.advance(0.0001)
    assert bucket.try_acquire().allowed


def test_steady_rate_is_exact_over_a_long_run() -> None:
    clock = FakeClock(0.0)
    bucket = GcraBucket(GcraLimit(rate_per_s=7, burst=3), clock)
    allowed = 0
    for _ in range(100_000):  # poll every 1 ms for 100 s
        allowed += bucket.try_acquire().allowed
        clock.advance(0.001)
    assert abs(allowed - (3 + 7 * 100)) <= 1


def test_held_request_consumes_nothing() -> None:
    limit = GcraLimit(rate_per_s=1, burst=1)
    first = gcra_check(None, 100.0, limit)
    assert first.allowed
    for _ in range(10):
        held = gcra_check(first.tat, 100.5, limit)
        assert not held.allowed
        assert held.tat == first.tat
    assert gcra_check(first.tat, 101.0, limit).allowed


def test_refund_gives_the_unit_back() -> None:
    limit = GcraLimit(rate_per_s=2, burst=1)
    taken = gcra_check(None, 10.0, limit)
    assert not gcra_check(taken.tat, 10.0, limit).allowed
    assert gcra_check(gcra_refund(taken.tat, limit), 10.0, limit).allowed


def test_burst_for_is_at_least_one() -> None:
    assert burst_for(0.05, 1.0) == 1
    assert burst_for(20, 1.0) == 20
    assert burst_for(20, 0.5) == 10
    with pytest.raises(ValueError):
        GcraLimit(rate_per_s=0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = FakeClock(0.0)
    bucket = GcraBucket(GcraLimit(rate_per_s=rate, burst=burst), clock)
    allowed = 0
    for gap in gaps:
        clock.advance(gap)
        result = bucket.try_acquire()
        allowed += result.allowed
        if not result.allowed:
            assert 0 < result.retry_after_s <= burst / rate + 1e-9
    assert allowed <= burst + math.floor(rate * clock.now + 1e-9)
