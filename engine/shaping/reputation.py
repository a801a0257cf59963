"""Sender reputation over a sliding window, and the auto-pause rule, sans-IO.

Counts live in Redis in time buckets (``reputation_window_s / BUCKETS`` each) so every
instance adds to the same numbers; this module holds the arithmetic and the rule:
pause when the complaint rate is above 0.3% or the hard-bounce rate above 5% (configurable)
over the window — but only once at least ``min_sample`` messages were sent in it, so one bounce
in three messages does not pause a new sender.
"""

from __future__ import annotations

import math

import msgspec

from engine.config import ShapingConfig

#: Buckets per window: the window slides in steps of window/BUCKETS.
BUCKETS = 24


class WindowCounts(msgspec.Struct, frozen=True):
    """Messages sent (attempts), hard bounces and complaints in the window."""

    attempts: int = 0
    hard_bounces: int = 0
    complaints: int = 0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.attempts if self.attempts else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.attempts if self.attempts else 0.0


class PauseVerdict(msgspec.Struct, frozen=True):
    """Why a sender was paused; Redis caches it next to the truth in ``oltp.senders``."""

    reason: str  # "complaint_rate" | "hard_bounce_rate" | "operator" | "restored" (from oltp)
    rate: float
    threshold: float
    attempts: int
    message: str


class PauseRule(msgspec.Struct, frozen=True):
    complaint_rate: float = 0.003
    hard_bounce_rate: float = 0.05
    min_sample: int = 100
    window_s: float = 86400.0

    @classmethod
    def from_config(cls, cfg: ShapingConfig) -> PauseRule:
        return cls(
            complaint_rate=cfg.complaint_pause_rate,
            hard_bounce_rate=cfg.hard_bounce_pause_rate,
            min_sample=cfg.pause_min_sample,
            window_s=cfg.reputation_window_s,
        )

    @property
    def bucket_s(self) -> float:
        return self.window_s / BUCKETS

    def evaluate(self, counts: WindowCounts) -> PauseVerdict | None:
        """A verdict when the window's rates call for a pause, else None."""
        if counts.attempts < self.min_sample:
            return None
        hours = self.window_s / 3600
        # Complaints first: when both rates are over, the verdict names the complaint rate.
        for reason, label, rate, count, threshold in (
            ("complaint_rate", "complaint", counts.complaint_rate, counts.complaints,
             self.complaint_rate),
            ("hard_bounce_rate", "hard-bounce", counts.hard_bounce_rate, counts.hard_bounces,
             self.hard_bounce_rate),
        ):  # fmt: skip
            if rate > threshold:
                return PauseVerdict(
                    reason=reason,
                    rate=rate,
                    threshold=threshold,
                    attempts=counts.attempts,
                    message=(
                        f"{label} rate {rate:.2%} over the last {hours:g}h "
                        f"({count}/{counts.attempts}) is above {threshold:.2%}"
                    ),
                )
        return None


def bucket_index(now: float, bucket_s: float) -> int:
    """The bucket a timestamp falls in (buckets are numbered from the epoch)."""
    return math.floor(now / bucket_s)
