"""Delivery feedback into Redis: AIMD rates and reputation windows, shared by every instance.

A batch of :class:`DeliverySignal` values is folded per sender x provider (successes, strongest
decrease) and per sender (attempts, hard bounces, complaints), grouped by tenant hash tag, and
sent as one ``feedback.lua`` call per tenant in one pipeline. The script returns each sender's
window totals and warm-up state; the sans-IO rules (:class:`PauseRule`, :class:`WarmupPlan`)
then decide, here in Python, whether to pause a sender or move its warm-up stage — rare events
that cost a second round trip only when they happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.config import ShapingConfig
from engine.errors import ShapingError
from engine.luascript import LuaScript
from engine.shaping.aimd import AimdBatch, AimdPolicy
from engine.shaping.clock import Clock
from engine.shaping.keys import ShapingKeys
from engine.shaping.model import ATTEMPT_KINDS, DeliverySignal, SignalKind
from engine.shaping.providers import ProviderTable
from engine.shaping.reputation import BUCKETS, PauseRule, PauseVerdict, WindowCounts
from engine.shaping.scripts import ScriptCall, ScriptRunner
from engine.shaping.warmup import WarmupMove, WarmupPlan, WarmupState

log = logging.getLogger("engine.shaping")
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(list[float]).decode


class ShapingEvent(msgspec.Struct, frozen=True):
    """Something an operator should see: a pause, a warm-up move. Also logged as one line."""

    kind: str  # sender_paused | warmup_advance | warmup_hold | warmup_step_back
    tenant_id: str
    sender: str
    message: str
    data: dict[str, object] = {}


class SenderState(msgspec.Struct, frozen=True):
    """A sender's shared state after a feedback batch."""

    tenant_id: str
    sender: str
    counts: WindowCounts  # the sliding reputation window (auto-pause)
    yesterday: WindowCounts  # the previous UTC day (warm-up moves)
    warmup: WarmupState | None  # None: not in the warm-up plan (graduated or exempt)
    paused: bool


class _Fold:
    def __init__(self) -> None:
        self.aimd: dict[tuple[str, str], AimdBatch] = {}  # (sender, provider)
        self.rep: dict[str, list[int]] = {}  # sender -> [attempts, hard, complaints]


class FeedbackStore:
    """Applies feedback batches and pauses / warm-up moves that follow from them."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: ShapingKeys,
        cfg: ShapingConfig,
        table: ProviderTable,
        plan: WarmupPlan,
        *,
        runner: ScriptRunner | None = None,
        clock: Clock | None = None,
        on_event: Callable[[ShapingEvent], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.cfg = cfg
        self.table = table
        self.plan = plan
        self.rule = PauseRule.from_config(cfg)
        self.runner = runner or ScriptRunner(client)
        self.script = LuaScript("feedback", "engine.shaping")
        self.roll_script = LuaScript("warmup_roll", "engine.shaping")
        self._clock = clock
        self._on_event = on_event
        self._policies: dict[str, AimdPolicy] = {}

    def reload(self, cfg: ShapingConfig, table: ProviderTable, plan: WarmupPlan) -> None:
        """Apply reloaded ``[shaping]`` settings: AIMD steps, pause thresholds, warm-up plan."""
        self.cfg, self.table, self.plan = cfg, table, plan
        self.rule = PauseRule.from_config(cfg)
        self._policies.clear()

    def policy(self, provider: str) -> AimdPolicy:
        p = self._policies.get(provider)
        if p is None:
            p = self._policies[provider] = AimdPolicy.from_config(
                self.cfg, self.table.get(provider).rate_per_s
            )
        return p

    async def apply(
        self, signals: Sequence[DeliverySignal]
    ) -> tuple[dict[tuple[str, str, str], float], list[SenderState]]:
        """Apply a batch; returns the new rates per (tenant, sender, provider) and senders."""
        folds: dict[str, _Fold] = {}
        for s in signals:
            fold = folds.get(s.tenant_id)
            if fold is None:
                fold = folds[s.tenant_id] = _Fold()
            sender = s.sender.lower()
            if s.provider:  # a bounce whose provider is unknown still counts for reputation
                key = (sender, s.provider)
                policy = self.policy(s.provider)
                fold.aimd[key] = fold.aimd.get(key, AimdBatch()).add(s.kind, policy)
            rep = fold.rep.setdefault(sender, [0, 0, 0])
            if s.attempt and s.kind in ATTEMPT_KINDS:
                rep[0] += 1
            if s.kind is SignalKind.HARD_BOUNCE:
                rep[1] += 1
            elif s.kind is SignalKind.COMPLAINT:
                rep[2] += 1
        if not folds:
            return {}, []
        now_ms = -1.0 if self._clock is None else self._clock() * 1000
        calls = [self._call(tenant, fold, now_ms) for tenant, fold in folds.items()]
        results = await self.runner.run(calls)
        rates: dict[tuple[str, str, str], float] = {}
        senders: list[SenderState] = []
        today = 0
        for (tenant, fold), packed in zip(folds.items(), results, strict=True):
            flat = _unpack(packed)
            today = int(flat[0])
            pos = 1
            for sender, provider in fold.aimd:
                rates[(tenant, sender, provider)] = float(flat[pos])
                pos += 1
            for sender in fold.rep:
                a, h, c, ya, yh, yc, stage, day, paused = (int(x) for x in flat[pos : pos + 9])
                pos += 9
                warm = WarmupState(stage=stage, day=day) if stage >= 0 else None
                senders.append(
                    SenderState(
                        tenant,
                        sender,
                        WindowCounts(a, h, c),
                        WindowCounts(ya, yh, yc),
                        warm,
                        bool(paused),
                    )
                )
        await self._follow_up(senders, today)
        return rates, senders

    def _call(self, tenant: str, fold: _Fold, now_ms: float) -> ScriptCall:
        keys: list[str] = []
        aimd: list[float] = []
        for (sender, provider), batch in fold.aimd.items():
            p = self.policy(provider)
            keys.append(self.keys.rate(tenant, sender, provider))
            aimd += [len(keys), p.floor, p.ceiling, p.start_rate, p.increase]
            aimd += [p.cooldown_s * 1000, batch.successes, batch.factor]
        rep: list[int] = []
        for sender, (a, h, c) in fold.rep.items():
            keys += [
                self.keys.reputation(tenant, sender),
                self.keys.warmup(tenant, sender),
                self.keys.pause(tenant, sender),
            ]
            rep += [len(keys) - 2, len(keys) - 1, len(keys), a, h, c]
        args = [repr(now_ms), repr(self.rule.bucket_s * 1000), BUCKETS, _pack((aimd, rep))]
        return ScriptCall(self.script, keys, args)

    async def _follow_up(self, senders: Sequence[SenderState], today: int) -> None:
        """Pause senders over the thresholds; move warm-up stages on a new day."""
        pauses: list[tuple[SenderState, PauseVerdict]] = []
        rolls: list[tuple[SenderState, WarmupState, WarmupMove]] = []
        for st in senders:
            if not st.paused:
                verdict = self.rule.evaluate(st.counts)
                if verdict is not None:
                    pauses.append((st, verdict))
            if st.warmup is not None:
                new, move = self.plan.roll(st.warmup, today, st.yesterday)
                if move is not None:
                    rolls.append((st, new, move))
        for st, verdict in pauses:
            if await self.pause(st.tenant_id, st.sender, verdict):
                self._emit(
                    ShapingEvent(
                        kind="sender_paused",
                        tenant_id=st.tenant_id,
                        sender=st.sender,
                        message=f"sender {st.sender} paused: {verdict.message}",
                        data=msgspec.structs.asdict(verdict),
                    )
                )
        if rolls:
            calls = [
                ScriptCall(
                    self.roll_script,
                    [self.keys.warmup(st.tenant_id, st.sender)],
                    [old.day, new.stage, new.day, self.plan.cap(new.stage)],
                )
                for st, new, _ in rolls
                if (old := st.warmup) is not None
            ]
            applied = await self.runner.run(calls)
            for (st, new, move), ok in zip(rolls, applied, strict=True):
                if ok:
                    self._emit(_warmup_event(st, new, move, self.plan))

    async def pause(self, tenant_id: str, sender: str, verdict: PauseVerdict) -> bool:
        """Pause a sender (no-op if already paused); True if this call paused it."""
        try:
            done = await self.client.set(
                self.keys.pause(tenant_id, sender), msgspec.json.encode(verdict), nx=True
            )
        except RedisError as exc:
            raise ShapingError(f"could not pause sender {sender}: {exc}") from exc
        return bool(done)

    async def resume(self, tenant_id: str, sender: str) -> bool:
        """Lift a pause and start the reputation window afresh (else it would re-pause at once)."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.keys.pause(tenant_id, sender))
            pipe.delete(self.keys.reputation(tenant_id, sender))
            deleted, _ = await pipe.execute()
        except RedisError as exc:
            raise ShapingError(f"could not resume sender {sender}: {exc}") from exc
        return bool(deleted)

    async def paused(self, tenant_id: str, sender: str) -> PauseVerdict | None:
        """Why a sender is paused, or None."""
        try:
            raw = await self.client.get(self.keys.pause(tenant_id, sender))
        except RedisError as exc:
            raise ShapingError(f"could not read the pause of sender {sender}: {exc}") from exc
        return None if raw is None else msgspec.json.decode(raw, type=PauseVerdict)

    def _emit(self, event: ShapingEvent) -> None:
        log.warning(
            event.message,
            extra={
                "event": event.kind,
                "tenant": event.tenant_id,
                "sender": event.sender,
                **{f"shaping_{k}": v for k, v in event.data.items()},
            },
        )
        if self._on_event is not None:
            self._on_event(event)


def _warmup_event(
    st: SenderState, new: WarmupState, move: WarmupMove, plan: WarmupPlan
) -> ShapingEvent:
    cap = plan.cap(new.stage)
    cap_text = "no daily cap (graduated)" if cap < 0 else f"{cap}/day per provider"
    c = st.yesterday
    return ShapingEvent(
        kind=f"warmup_{move.value}",
        tenant_id=st.tenant_id,
        sender=st.sender,
        message=(
            f"sender {st.sender} warm-up {move.value.replace('_', ' ')}: stage {new.stage}, "
            f"{cap_text} (yesterday: {c.attempts} sent, {c.hard_bounce_rate:.2%} hard bounces, "
            f"{c.complaint_rate:.2%} complaints)"
        ),
        data={"stage": new.stage, "cap": cap},
    )
