"""Circuit breaker state machine with a fake clock."""

from __future__ import annotations

import pytest

from engine.relay.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(b: CircuitBreaker) -> BreakerState:
    # A function call, so mypy does not narrow the property across the assertions.
    return b.state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_opens_after_n_consecutive_failures(clock: FakeClock) -> None:
    changes: list[tuple[BreakerState, BreakerState]] = []
    b = CircuitBreaker(3, 30.0, clock=clock, on_change=lambda o, n: changes.append((o, n)))
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert state(b) is BreakerState.CLOSED
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    assert not b.allow() and not b.available()
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_resets_the_count(clock: FakeClock) -> None:
    b = CircuitBreaker(3, 30.0, clock=clock)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert state(b) is BreakerState.CLOSED


def test_half_open_lets_one_probe_through_and_success_closes(clock: FakeClock) -> None:
    b = CircuitBreaker(1, 30.0, clock=clock)
    b.record_failure()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert state(b) is BreakerState.HALF_OPEN
    assert b.available()
    assert b.allow()  # the probe
    assert not b.allow()  # everyone else waits for its verdict
    assert not b.available()
    b.record_success()
    assert state(b) is BreakerState.CLOSED
    assert b.allow() and b.allow()


def test_failed_probe_opens_for_another_cooldown(clock: FakeClock) -> None:
    b = CircuitBreaker(2, 10.0, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    clock.now += 9
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_released_probe_slot_can_be_taken_again(clock: FakeClock) -> None:
    b = CircuitBreaker(1, 5.0, clock=clock)
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.release()
    assert b.allow()


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(0, 1.0)
