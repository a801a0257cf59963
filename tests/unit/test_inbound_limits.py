"""PeerLimits (sans-IO, injected clock): connection caps, per-minute and hourly quotas, pruning."""

from __future__ import annotations

from engine.inbound.limits import (
    CONNECTIONS,
    IP_BYTES_HOUR,
    IP_CONNECTIONS,
    IP_MESSAGES_HOUR,
    IP_RATE_MINUTE,
    PeerLimits,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_global_and_per_ip_connection_caps() -> None:
    limits = PeerLimits(2, 100, max_total_connections=3)
    assert limits.connect("10.0.0.1") is None
    assert limits.connect("10.0.0.1") is None
    assert limits.connect("10.0.0.1") == IP_CONNECTIONS
    assert limits.connect("10.0.0.2") is None
    assert limits.connect("10.0.0.3") == CONNECTIONS  # 3 open in all
    limits.disconnect("10.0.0.1")
    assert limits.connect("10.0.0.3") is None
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        limits.disconnect(ip)
    assert limits.total == 0 and limits.open == {}
    assert CONNECTIONS.reply.startswith("421 4.7.0")


def test_minute_rate_then_hourly_message_quota() -> None:
    clock = Clock()
    limits = PeerLimits(10, 5, clock, max_messages_per_hour=12)
    assert [limits.message("1.2.3.4") for _ in range(6)][-1] == IP_RATE_MINUTE
    assert limits.message("5.6.7.8") is None  # another IP is not affected
    clock.now += 61
    assert all(limits.message("1.2.3.4") is None for _ in range(5))
    clock.now += 61
    got = [limits.message("1.2.3.4") for _ in range(5)]
    assert got[:2] == [None, None] and got[2] == IP_MESSAGES_HOUR  # 12 within the hour
    assert "Hourly message quota" in IP_MESSAGES_HOUR.reply
    clock.now += 2 * 3600  # the window has slid past them all
    assert limits.message("1.2.3.4") is None


def test_hourly_window_slides() -> None:
    """Counts of the previous hour weigh by how much of it is still within the last 3,600 s."""
    clock = Clock(3600.0 * 100)  # at the start of an hour
    limits = PeerLimits(10, 10_000, clock, max_messages_per_hour=100)
    clock.now += 3000
    for _ in range(100):
        assert limits.message("ip") is None
    assert limits.message("ip") == IP_MESSAGES_HOUR
    clock.now += 1600  # next hour, 1,000 s in: 100 * (1 - 1000/3600) = 72 still count
    assert [limits.message("ip") for _ in range(29)].count(None) == 28


def test_byte_quota_at_data_and_declared_size_at_mail() -> None:
    clock = Clock()
    limits = PeerLimits(10, 1000, clock, max_bytes_per_hour=10_000)
    assert limits.data("ip", 6_000) is None
    assert limits.data("ip", 5_000) == IP_BYTES_HOUR  # not counted when refused
    assert limits.data("ip", 4_000) is None
    assert limits.message("ip") == IP_BYTES_HOUR  # nothing left: refused before DATA
    assert limits.message("other", size=20_000) == IP_BYTES_HOUR  # SIZE alone is over
    assert limits.message("other", size=2_000) is None
    clock.now += 2 * 3600
    assert limits.message("ip", size=9_000) is None


def test_many_distinct_ips_do_not_grow_the_table() -> None:
    """100k IPs, one message each, 0.1 s apart: only the last two hours' IPs are kept."""
    clock = Clock()
    limits = PeerLimits(10, 600, clock)
    for i in range(100_000):
        clock.now += 0.1
        assert limits.message(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") is None
    assert len(limits) <= 72_001  # 7,200 s / 0.1 s
    clock.now += 7201
    limits.message("192.0.2.1")
    assert len(limits) == 1


def test_table_is_capped_for_a_burst_of_ips() -> None:
    clock = Clock()
    limits = PeerLimits(10, 600, clock, max_tracked=10_000)
    for i in range(100_000):
        limits.connect(f"ip{i}")
        assert limits.message(f"ip{i}") is None
        assert limits.data(f"ip{i}", 100) is None
        limits.disconnect(f"ip{i}")
    assert len(limits) == 10_000 and limits.total == 0 and not limits.open
    # the most recently seen are the ones kept: their counts still apply
    limits.max_per_minute = 1
    assert limits.message("ip99999") == IP_RATE_MINUTE
