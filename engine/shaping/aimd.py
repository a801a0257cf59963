"""AIMD rate control per sender x provider, sans-IO.

Like TCP congestion control, applied to a send rate: every clean delivery adds a little (``increase
· ceiling / rate`` each, so a sender running at its rate gains ``increase · ceiling`` per second of
clean traffic), and a bad signal multiplies the rate by a factor below one. A burst of throttling
replies from one episode arrives all at once, so at most one decrease happens per ``cooldown_s``
(TCP: one per round trip) — otherwise 50 replies to one burst would drive the rate to the floor. The
rate always stays within ``[floor, ceiling]``; the ceiling is the provider's configured rate.

``lua/feedback.lua`` runs the same update inside Redis so every daemon instance shares one rate.
"""

from __future__ import annotations

import math

import msgspec

from engine.config import ShapingConfig
from engine.shaping.model import SignalKind


class AimdPolicy(msgspec.Struct, frozen=True):
    """How a rate reacts to delivery signals."""

    floor: float
    ceiling: float
    increase: float = 0.05  # fraction of the ceiling gained per `rate` clean deliveries
    throttled: float = 0.5  # 421 / 4.7.x: the provider asked us to slow down
    blocked: float = 0.5  # 5.7.x policy rejection: reputation trouble
    complaint: float = 0.5  # a recipient pressed "spam"
    deferred: float = 0.85  # generic 4xx / timeout: maybe congestion, maybe not
    hard_bounce: float = 0.9  # bad addresses hurt reputation, but mildly per message
    soft_bounce: float = 1.0  # mailbox full and friends say nothing about our rate
    cooldown_s: float = 2.0
    initial: float = 1.0  # a new sender x provider starts at this fraction of the ceiling

    @classmethod
    def from_config(cls, cfg: ShapingConfig, ceiling: float) -> AimdPolicy:
        """The policy for one provider's ceiling, from ``[shaping]`` knobs."""
        floor = min(cfg.min_rate_per_s, ceiling)
        return cls(
            floor=floor,
            ceiling=ceiling,
            increase=cfg.aimd_increase,
            throttled=cfg.aimd_decrease,
            complaint=cfg.aimd_decrease,
            cooldown_s=cfg.aimd_cooldown_s,
            initial=cfg.aimd_initial,
        )

    def factor(self, kind: SignalKind) -> float:
        """Multiplicative factor a signal of ``kind`` asks for (1.0: no decrease)."""
        return {
            SignalKind.DELIVERED: 1.0,
            SignalKind.DEFERRED: self.deferred,
            SignalKind.THROTTLED: self.throttled,
            SignalKind.BLOCKED: self.blocked,
            SignalKind.HARD_BOUNCE: self.hard_bounce,
            SignalKind.SOFT_BOUNCE: self.soft_bounce,
            SignalKind.COMPLAINT: self.complaint,
        }[kind]

    @property
    def start_rate(self) -> float:
        return max(self.floor, self.ceiling * self.initial)


class AimdState(msgspec.Struct, frozen=True):
    """The adapted rate and when it was last decreased (``-inf``: never)."""

    rate: float
    decreased_at: float = float("-inf")


class AimdBatch(msgspec.Struct, frozen=True):
    """The signals of one feedback batch for one sender x provider, folded together."""

    successes: int = 0
    factor: float = 1.0  # the smallest (strongest) factor seen; 1.0 when the batch was clean

    def add(self, kind: SignalKind, policy: AimdPolicy) -> AimdBatch:
        if kind is SignalKind.DELIVERED:
            return AimdBatch(self.successes + 1, self.factor)
        return AimdBatch(self.successes, min(self.factor, policy.factor(kind)))


def aimd_update(
    state: AimdState | None, batch: AimdBatch, now: float, policy: AimdPolicy
) -> AimdState:
    """Apply one folded batch: decrease once if anything was bad, else grow per clean delivery."""
    current = policy.start_rate if state is None else state.rate
    # The ceiling may have been lowered in config since the rate was stored.
    rate = min(max(current, policy.floor), policy.ceiling)
    decreased_at = float("-inf") if state is None else state.decreased_at
    if batch.factor < 1.0:
        if now - decreased_at >= policy.cooldown_s:
            rate = max(policy.floor, rate * batch.factor)
            decreased_at = now
        # A batch with a bad signal never grows the rate, even inside the cooldown.
        return AimdState(rate=rate, decreased_at=decreased_at)
    if batch.successes:
        # TCP's "+1/cwnd per ACK" in continuous form: dr/dn = step/r, so r² grows by 2·step·n.
        # Closed form, so the result does not depend on how deliveries were batched.
        step = policy.increase * policy.ceiling
        rate = min(policy.ceiling, math.sqrt(rate * rate + 2.0 * step * batch.successes))
    return AimdState(rate=rate, decreased_at=decreased_at)
