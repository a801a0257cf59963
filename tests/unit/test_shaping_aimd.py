"""AIMD per sender x provider: multiplicative decrease on bad signals, additive growth, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import ShapingConfig
from engine.shaping.aimd import AimdBatch, AimdPolicy, AimdState, aimd_update
from engine.shaping.model import SignalKind

POLICY = AimdPolicy(floor=0.5, ceiling=20.0, increase=0.05, cooldown_s=2.0)


def batch(*kinds: SignalKind) -> AimdBatch:
    b = AimdBatch()
    for k in kinds:
        b = b.add(k, POLICY)
    return b


def test_throttling_halves_the_rate_once_per_cooldown() -> None:
    s = aimd_update(AimdState(rate=20.0), batch(SignalKind.THROTTLED), 100.0, POLICY)
    assert s.rate == 10.0
    # Fifty more 421s from the same burst, inside the cooldown: no further decrease.
    s = aimd_update(s, batch(*[SignalKind.THROTTLED] * 50), 101.0, POLICY)
    assert s.rate == 10.0
    s = aimd_update(s, batch(SignalKind.THROTTLED), 102.0, POLICY)
    assert s.rate == 5.0


def test_a_bad_signal_in_a_batch_blocks_growth() -> None:
    s = aimd_update(
        AimdState(rate=10.0, decreased_at=99.0),
        batch(SignalKind.DELIVERED, SignalKind.DEFERRED),
        100.0,
        POLICY,
    )
    assert s.rate == 10.0


def test_strongest_factor_wins() -> None:
    b = batch(SignalKind.DEFERRED, SignalKind.HARD_BOUNCE, SignalKind.BLOCKED)
    assert b.factor == POLICY.blocked
    assert batch(SignalKind.SOFT_BOUNCE).factor == 1.0


def test_never_below_floor() -> None:
    s = AimdState(rate=1.0)
    for i in range(20):
        s = aimd_update(s, batch(SignalKind.THROTTLED), 100.0 + 10 * i, POLICY)
    assert s.rate == POLICY.floor


def test_clean_delivery_recovers_to_the_ceiling_and_stops() -> None:
    s = AimdState(rate=5.0)
    # At full speed a sender gains increase·ceiling = 1 msg/s per second of clean traffic:
    # 5 → 10 takes ~7.5 s worth of deliveries (r² grows by 2·1·n).
    s1 = aimd_update(s, batch(*[SignalKind.DELIVERED] * 38), 0.0, POLICY)
    assert s1.rate == pytest.approx((25 + 2 * 1.0 * 38) ** 0.5)
    s2 = aimd_update(s1, AimdBatch(successes=10_000), 0.0, POLICY)
    assert s2.rate == POLICY.ceiling


@given(st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_growth_does_not_depend_on_batching(chunks: list[int]) -> None:
    one = aimd_update(AimdState(rate=1.0), AimdBatch(successes=sum(chunks)), 0.0, POLICY)
    many = AimdState(rate=1.0)
    for n in chunks:
        many = aimd_update(many, AimdBatch(successes=n), 0.0, POLICY)
    assert many.rate == pytest.approx(one.rate)


def test_new_sender_starts_at_initial_fraction_and_config_ceiling_is_respected() -> None:
    cfg = ShapingConfig(aimd_initial=0.25, min_rate_per_s=0.1)
    policy = AimdPolicy.from_config(cfg, ceiling=8.0)
    assert policy.start_rate == 2.0
    assert aimd_update(None, AimdBatch(), 0.0, policy).rate == 2.0
    # A stored rate above a since-lowered ceiling is clamped.
    assert aimd_update(AimdState(rate=50.0), AimdBatch(), 0.0, policy).rate == 8.0
