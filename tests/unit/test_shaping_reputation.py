"""Auto-pause rule: complaint rate > 0.3% or hard-bounce rate > 5%, never on a tiny sample."""

from __future__ import annotations

from engine.config import ShapingConfig
from engine.shaping.reputation import PauseRule, WindowCounts, bucket_index

RULE = PauseRule.from_config(ShapingConfig())


def test_six_percent_hard_bounces_pause() -> None:
    verdict = RULE.evaluate(WindowCounts(attempts=200, hard_bounces=12))
    assert verdict is not None
    assert verdict.reason == "hard_bounce_rate"
    assert "6.00%" in verdict.message and "5.00%" in verdict.message


def test_complaints_above_three_per_mille_pause() -> None:
    verdict = RULE.evaluate(WindowCounts(attempts=1000, complaints=4))
    assert verdict is not None and verdict.reason == "complaint_rate"
    assert RULE.evaluate(WindowCounts(attempts=1000, complaints=3)) is None  # 0.3% is not > 0.3%


def test_small_samples_never_pause() -> None:
    assert RULE.evaluate(WindowCounts(attempts=3, hard_bounces=1)) is None
    assert RULE.evaluate(WindowCounts(attempts=99, hard_bounces=50)) is None
    assert RULE.evaluate(WindowCounts()) is None


def test_thresholds_are_configurable() -> None:
    rule = PauseRule.from_config(
        ShapingConfig(hard_bounce_pause_rate=0.1, pause_min_sample=10, reputation_window_s=3600)
    )
    assert rule.evaluate(WindowCounts(attempts=20, hard_bounces=2)) is None
    assert rule.evaluate(WindowCounts(attempts=20, hard_bounces=3)) is not None
    assert rule.bucket_s == 150


def test_bucket_index() -> None:
    assert bucket_index(3600 * 5 + 1, 3600) == 5
