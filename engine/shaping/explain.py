"""Policy dry-run: which limit would hold a message from a sender to an address, and until when.

Behind ``engine shaping explain --sender S --to ADDR``. Evaluates every level of the hierarchy
against the live shared state in Redis without consuming anything, and adds the context an
operator needs to read it: the provider the recipient rolls up to (and how it was found), the
AIMD-adapted rate against its ceiling, the warm-up stage and cap, and a pause with its reason.
"""

from __future__ import annotations

import msgspec

from engine.shaping.limiter import LevelStatus
from engine.shaping.model import Level, Provider, ShapeRequest
from engine.shaping.reputation import PauseVerdict
from engine.shaping.shaper import Shaper
from engine.shaping.warmup import NO_CAP


class Explanation(msgspec.Struct, frozen=True, omit_defaults=True):
    """The verdict for one (sender, recipient) and the state of every level behind it."""

    tenant_id: str
    sender: str
    recipient: str
    provider: Provider
    shaping_enabled: bool
    allowed: bool  # would go now
    retry_after_s: float = 0.0  # else: earliest time it could go
    held_by: Level | None = None
    levels: list[LevelStatus] = []
    rate_per_s: float | None = None  # AIMD-adapted rate of sender x provider
    ceiling_per_s: float | None = None
    warmup_stage: int | None = None  # None: not in the warm-up plan
    warmup_stages: int | None = None
    warmup_cap: int | None = None  # daily cap per provider at this stage
    paused: PauseVerdict | None = None


async def explain(
    shaper: Shaper, tenant_id: str, sender: str, recipient: str, node: str | None = None
) -> Explanation:
    """Evaluate, without consuming, what would happen to one message now."""
    domain = recipient.rpartition("@")[2].lower()
    provider = (await shaper.resolve_providers([domain]))[domain]
    if not shaper.enabled:
        return Explanation(tenant_id, sender, recipient, provider, False, True)
    request = ShapeRequest(tenant_id, sender, provider.name, node=node)
    levels = await shaper.peek(request)
    worst = max(levels, key=lambda s: s.retry_after_s, default=None)
    held = worst is not None and worst.retry_after_s > 0
    paused = await shaper.is_paused(tenant_id, sender)
    warm = await shaper.warmup_state(tenant_id, sender)
    cap = None
    if warm is not None:
        cap = shaper.plan.cap(warm.stage)
    elif shaper.cfg.shaping.warmup:
        cap = shaper.plan.cap(0)  # a sender never seen starts the plan with its first message
    return Explanation(
        tenant_id=tenant_id,
        sender=sender,
        recipient=recipient,
        provider=provider,
        shaping_enabled=True,
        allowed=not held and paused is None,
        retry_after_s=_retry_after(shaper, worst if held else None, paused),
        held_by=Level.PAUSED if paused else worst.level if held and worst else None,
        levels=levels,
        rate_per_s=await shaper.rate(tenant_id, sender, provider.name),
        ceiling_per_s=provider.rate_per_s,
        warmup_stage=None if warm is None else warm.stage,
        warmup_stages=len(shaper.plan.caps),
        warmup_cap=cap,
        paused=paused,
    )


def _retry_after(shaper: Shaper, worst: LevelStatus | None, paused: PauseVerdict | None) -> float:
    """A paused sender's jobs are held for ``paused_retry_s`` before any limit is asked."""
    if paused is not None:
        return shaper.cfg.shaping.paused_retry_s
    return 0.0 if worst is None else worst.retry_after_s


def _level_line(s: LevelStatus) -> str:
    state = "ok" if s.retry_after_s <= 0 else f"HOLDS for {_duration(s.retry_after_s)}"
    if s.level is Level.WARMUP:
        cap = "no cap" if s.limit == NO_CAP else f"{s.limit:g}/day"
        what = f"warm-up cap {cap}, {s.used:g} sent today"
    else:
        what = f"{s.limit:g} msg/s, {max(0.0, s.used):.1f} ahead of schedule"
    return f"  {s.level.value:<14} {what:<48} {state}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(e: Explanation) -> str:
    """The text ``engine shaping explain`` prints."""
    p = e.provider
    lines = [
        f"sender {e.sender} (tenant {e.tenant_id}) -> {e.recipient}",
        f"provider {p.name} ({p.source}): ceiling {p.rate_per_s:g} msg/s per sender, "
        f"{p.max_connections} connections, {p.max_messages_per_connection} msg/connection",
    ]
    if not e.shaping_enabled:
        lines.append("shaping is disabled ([shaping] enabled = false): it would go now")
        return "\n".join(lines)
    if e.rate_per_s is not None:
        lines.append(f"adapted rate {e.rate_per_s:.3g} msg/s of {e.ceiling_per_s:g} (AIMD)")
    if e.warmup_stage is not None:
        cap = "no cap (graduated)" if e.warmup_cap == NO_CAP else f"{e.warmup_cap}/day"
        lines.append(f"warm-up stage {e.warmup_stage}/{e.warmup_stages}: {cap} per provider")
    elif e.warmup_cap is not None:
        lines.append(f"warm-up: not started; the first day allows {e.warmup_cap} per provider")
    if e.paused is not None:
        lines.append(f"PAUSED: {e.paused.message}")
    lines.append("levels:")
    lines.extend(_level_line(s) for s in e.levels)
    if e.allowed:
        lines.append("verdict: would go now")
    else:
        level = e.held_by.value if e.held_by else "?"
        lines.append(f"verdict: held by {level}; could go in {_duration(e.retry_after_s)}")
    return "\n".join(lines)
