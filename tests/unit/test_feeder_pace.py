"""The feeder's time cap: the send rate measured from the streams' counters, and the unread
backlog per priority it allows."""

from __future__ import annotations

import msgspec

from engine.config import QueueConfig
from engine.queue.pace import InFlightWindow, Pace


def test_the_cap_follows_the_measured_rate() -> None:
    pace = Pace(QueueConfig(stream_backlog_s=0.5, stream_backlog_min=64))
    assert pace.allowance() == 64  # nothing measured yet: the floor
    pace.observe(0.0, length=0, pushed=0)
    # 1 s later: 1,200 pushed, 200 still on the streams -> 1,000 left per second.
    pace.observe(1.0, length=200, pushed=1200)
    assert pace.rate == 1000.0
    assert pace.allowance() == 500
    # Samples closer than MIN_SAMPLE_S are ignored; later ones are averaged in.
    pace.observe(1.05, length=0, pushed=5000)
    assert pace.rate == 1000.0
    pace.observe(2.0, length=200, pushed=2200)  # 1,000 more left in 1 s
    assert pace.rate == 1000.0


def test_counters_that_go_back_restart_the_measure() -> None:
    pace = Pace(QueueConfig(stream_backlog_s=1.0, stream_backlog_min=10))
    pace.observe(0.0, length=100, pushed=5000)
    pace.observe(1.0, length=0, pushed=0)  # Redis flushed: no negative rate
    assert pace.rate is None
    assert pace.allowance() == 10


def test_zero_turns_the_time_cap_off() -> None:
    pace = Pace(msgspec.structs.replace(QueueConfig(), stream_backlog_s=0.0))
    assert pace.allowance() is None


def test_the_in_flight_window_is_a_time_of_the_finishing_rate() -> None:
    now = [0.0]
    window = InFlightWindow(
        QueueConfig(max_in_flight=512, in_flight_s=0.5, in_flight_min=128), lambda: now[0]
    )
    assert window.size() == 512  # no rate yet: the whole window
    now[0] = 1.0
    window.done(100)  # 100 jobs/s
    assert window.size() == 128  # half a second is 50: the floor
    for _ in range(10):
        now[0] += 1.0
        window.done(2000)
    assert window.size() == 512  # 2,000 jobs/s: capped at max_in_flight
    for _ in range(2):
        now[0] += 1.0
        window.done(100)
    assert 128 < window.size() < 512  # follows the rate down, averaged
