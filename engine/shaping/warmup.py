"""The warm-up plan for new senders, sans-IO.

A new sender may send at most ``caps[stage]`` messages per UTC day to each provider. Once a day
(at the first feedback of a new day) the stage is re-evaluated from the previous UTC day's
numbers: it advances one stage when enough mail went out and bounce and complaint rates stayed
under the thresholds, holds when the day was too quiet or rates were elevated, and steps back
when rates were above twice the thresholds. Past the last stage the sender has graduated and
only the rate limits apply.
"""

from __future__ import annotations

import enum

import msgspec

from engine.config import ShapingConfig
from engine.shaping.reputation import WindowCounts

#: Daily cap per sender x provider over 30 days: 50 → 100 → 500 → 1000 → … → 500k.
DEFAULT_PLAN: tuple[int, ...] = (
    50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
    4000, 5000, 7500, 10000, 15000, 20000, 25000, 30000, 40000, 50000,
    60000, 75000, 100000, 125000, 150000, 200000, 250000, 300000, 400000, 500000,
)  # fmt: skip

#: The cap value stored for a graduated sender (no daily cap).
NO_CAP = -1


class WarmupMove(enum.StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    STEP_BACK = "step_back"


class WarmupState(msgspec.Struct, frozen=True):
    """Where a sender is in the plan, and the UTC day that stage was last evaluated."""

    stage: int
    day: int


class WarmupPlan(msgspec.Struct, frozen=True):
    """Caps per stage and the thresholds that gate moving through them."""

    caps: tuple[int, ...] = DEFAULT_PLAN
    max_bounce_rate: float = 0.02
    max_complaint_rate: float = 0.001
    min_sample: int = 20

    def __post_init__(self) -> None:
        if not self.caps or min(self.caps) < 1:
            raise ValueError("a warm-up plan needs at least one stage and positive caps")

    @classmethod
    def from_config(cls, cfg: ShapingConfig) -> WarmupPlan:
        return cls(
            caps=tuple(cfg.warmup_plan) or DEFAULT_PLAN,
            max_bounce_rate=cfg.warmup_max_bounce_rate,
            max_complaint_rate=cfg.warmup_max_complaint_rate,
            min_sample=cfg.warmup_min_sample,
        )

    @property
    def graduated_stage(self) -> int:
        return len(self.caps)

    def cap(self, stage: int) -> int:
        """Daily cap per provider at ``stage``; :data:`NO_CAP` once graduated."""
        return self.caps[stage] if 0 <= stage < len(self.caps) else NO_CAP

    def judge(self, counts: WindowCounts) -> WarmupMove:
        """What yesterday's numbers say about moving on."""
        if counts.attempts < self.min_sample:
            return WarmupMove.HOLD
        bounce, complaint = counts.hard_bounce_rate, counts.complaint_rate
        if bounce > 2 * self.max_bounce_rate or complaint > 2 * self.max_complaint_rate:
            return WarmupMove.STEP_BACK
        if bounce > self.max_bounce_rate or complaint > self.max_complaint_rate:
            return WarmupMove.HOLD
        return WarmupMove.ADVANCE

    def roll(
        self, state: WarmupState, today: int, counts: WindowCounts
    ) -> tuple[WarmupState, WarmupMove | None]:
        """Re-evaluate at most once per day; returns the new state and the move (None: same day).

        ``counts`` are the previous UTC day's; a sender that was idle yesterday holds, and a
        week without feedback is one evaluation, not seven stages.
        """
        if today <= state.day or state.stage >= self.graduated_stage:
            return state, None
        move = self.judge(counts)
        stage = state.stage
        if move is WarmupMove.ADVANCE:
            stage += 1
        elif move is WarmupMove.STEP_BACK:
            stage = max(0, stage - 1)
        return WarmupState(stage=stage, day=today), move
