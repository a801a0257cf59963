"""Work queued ahead of a new job, kept to a time: the feeder's :class:`Pace` (unread entries on
the streams) and each dispatcher's :class:`InFlightWindow` (jobs read and not yet finished).

Both measure a rate and turn a number of seconds into a number of jobs, so a job pushed now
(another tenant's turn, a high-priority message) waits behind about that much work, whatever
the send rate, instead of behind fixed counts sized for the fastest host.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.config import QueueConfig


class Pace:
    """The streams' send rate, measured from what was pushed and what left the streams, and
    the unread backlog per priority it allows (``[queue] stream_backlog_s``)."""

    #: Shortest window a rate sample is taken over.
    MIN_SAMPLE_S = 0.2

    def __init__(self, cfg: QueueConfig) -> None:
        self.backlog_s = cfg.stream_backlog_s
        self.floor = cfg.stream_backlog_min
        self.rate: float | None = None  # entries per second leaving the streams
        self._last: tuple[float, int, int] | None = None  # (time, stream length, ever pushed)
        self.capped = False  # the last round pushed less than was asked because of the cap

    def observe(self, now: float, length: int, pushed: int) -> None:
        """Take a sample: entries that left the streams = pushed since - growth in length."""
        last = self._last
        if last is not None and now - last[0] < self.MIN_SAMPLE_S:
            return
        self._last = (now, length, pushed)
        if last is None:
            return
        left = (pushed - last[2]) - (length - last[1])
        if left < 0:  # the counters went back (Redis flushed or replaced): start again
            return
        sample = left / (now - last[0])
        self.rate = sample if self.rate is None else 0.5 * self.rate + 0.5 * sample

    def allowance(self) -> int | None:
        """Unread entries allowed per priority (None: no time cap)."""
        if self.backlog_s <= 0:
            return None
        return max(self.floor, int((self.rate or 0.0) * self.backlog_s))

    @property
    def retry_s(self) -> float:
        """How soon to look again after a capped round: well before the backlog runs out."""
        return min(0.25, max(0.02, self.backlog_s / 4))


class InFlightWindow:
    """How many jobs a dispatcher may hold in flight: ``[queue] in_flight_s`` of its own
    measured finishing rate, between ``in_flight_min`` and ``max_in_flight``."""

    #: Shortest window a rate sample is taken over.
    MIN_SAMPLE_S = 0.5

    def __init__(self, cfg: QueueConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.max = cfg.max_in_flight
        self.seconds = cfg.in_flight_s
        self.floor = min(cfg.max_in_flight, cfg.in_flight_min)
        self.clock = clock
        self.rate: float | None = None  # jobs finished per second
        self._count = 0
        self._since = clock()

    def done(self, n: int) -> None:
        """``n`` jobs finished (an outcome written, whatever it was)."""
        self._count += n
        now = self.clock()
        elapsed = now - self._since
        if elapsed < self.MIN_SAMPLE_S:
            return
        sample = self._count / elapsed
        self.rate = sample if self.rate is None else 0.5 * self.rate + 0.5 * sample
        self._count, self._since = 0, now

    def size(self) -> int:
        """The window now: the whole ``max_in_flight`` until a rate is known."""
        if self.seconds <= 0 or self.rate is None:
            return self.max
        return min(self.max, max(self.floor, int(self.rate * self.seconds)))
