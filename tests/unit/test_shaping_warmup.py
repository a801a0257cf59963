"""Warm-up plan: advance a stage per clean day, hold when quiet or elevated, step back when bad."""

from __future__ import annotations

import pytest

from engine.config import ShapingConfig
from engine.shaping.reputation import WindowCounts
from engine.shaping.warmup import DEFAULT_PLAN, NO_CAP, WarmupMove, WarmupPlan, WarmupState

PLAN = WarmupPlan(caps=(50, 100, 500, 1000), max_bounce_rate=0.02, max_complaint_rate=0.001)
CLEAN = WindowCounts(attempts=500, hard_bounces=2, complaints=0)


def test_default_plan_spans_about_30_days_from_50() -> None:
    assert DEFAULT_PLAN[:4] == (50, 100, 200, 300)
    assert 25 <= len(DEFAULT_PLAN) <= 35
    assert list(DEFAULT_PLAN) == sorted(DEFAULT_PLAN)
    assert WarmupPlan.from_config(ShapingConfig()).caps == DEFAULT_PLAN
    assert WarmupPlan.from_config(ShapingConfig(warmup_plan=[10, 20])).caps == (10, 20)


def test_advances_one_stage_per_clean_day() -> None:
    s = WarmupState(stage=0, day=100)
    s, move = PLAN.roll(s, 101, CLEAN)
    assert (s, move) == (WarmupState(1, 101), WarmupMove.ADVANCE)
    # Same day again: no second evaluation.
    assert PLAN.roll(s, 101, CLEAN) == (s, None)
    # A week idle then clean: still one stage, not seven.
    s, _ = PLAN.roll(s, 108, CLEAN)
    assert s == WarmupState(2, 108)


def test_holds_when_too_quiet_or_elevated() -> None:
    s = WarmupState(stage=2, day=1)
    assert PLAN.roll(s, 2, WindowCounts(attempts=5))[1] is WarmupMove.HOLD
    elevated = WindowCounts(attempts=1000, hard_bounces=30)  # 3% > 2%, < 4%
    assert PLAN.roll(s, 2, elevated) == (WarmupState(2, 2), WarmupMove.HOLD)


def test_steps_back_when_rates_are_twice_the_threshold() -> None:
    bad = WindowCounts(attempts=1000, complaints=3)  # 0.3% > 2 × 0.1%
    assert PLAN.roll(WarmupState(2, 1), 2, bad) == (WarmupState(1, 2), WarmupMove.STEP_BACK)
    assert PLAN.roll(WarmupState(0, 1), 2, bad)[0].stage == 0


def test_graduates_past_the_last_stage() -> None:
    s, _ = PLAN.roll(WarmupState(3, 1), 2, CLEAN)
    assert s.stage == PLAN.graduated_stage
    assert PLAN.cap(s.stage) == NO_CAP
    assert PLAN.roll(s, 3, CLEAN) == (s, None)


def test_plan_needs_positive_caps() -> None:
    with pytest.raises(ValueError):
        WarmupPlan(caps=())
    with pytest.raises(ValueError):
        WarmupPlan(caps=(10, 0))
