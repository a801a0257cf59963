"""A circuit breaker per relay node (sans-IO, the clock is injected).

Closed: traffic flows; connection-level failures (refused, TLS/AUTH failure, timeout, dropped
connection) are counted and any success resets the count. After ``failure_threshold`` failures in
a row the breaker opens: the node gets no traffic, so messages fail over to other nodes at once
instead of each waiting out a connect timeout. After ``cooldown_s`` it is half-open: exactly one
caller (the probe — a message or a health check) is let through; its success closes the breaker,
its failure opens it for another cooldown.

SMTP replies about a message or a recipient (450 mailbox busy, 550 user unknown) are not
failures here: the node answered, so it is alive.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Clock = Callable[[], float]
StateListener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open after a cooldown → closed."""

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        *,
        clock: Clock = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cooldown has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self._cooldown_over():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _cooldown_over(self) -> bool:
        return self._clock() - self._opened_at >= self.cooldown_s

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)

    def available(self) -> bool:
        """Could a call go through now? (Does not take the half-open probe slot.)"""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return self._cooldown_over()
        return not self._probe_out

    def allow(self) -> bool:
        """Ask to make a call; in half-open state only the first caller gets ``True``.

        A caller that got ``True`` must report back with :meth:`record_success`,
        :meth:`record_failure` or :meth:`release`, otherwise a half-open breaker stays shut.
        """
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            if not self._cooldown_over():
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def record_success(self) -> None:
        """The node answered: close the breaker and forget past failures."""
        self._failures = 0
        self._probe_out = False
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A connection-level failure: opens at the threshold, or at once after a failed probe."""
        self._failures += 1
        self._probe_out = False
        if self._state is BreakerState.CLOSED and self._failures < self.failure_threshold:
            return
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def release(self) -> None:
        """Give the half-open probe slot back without a verdict (the call never reached it)."""
        self._probe_out = False
