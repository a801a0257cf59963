"""The façade the daemon calls: acquire before sending, feedback after, pause/resume, persist.

``[shaping] enabled = false`` makes :meth:`Shaper.acquire` allow everything and every other
call a no-op, with zero Redis calls (benchmarks of the raw path, DESIGN §8).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.config import Config
from engine.errors import EngineError, ShapingError
from engine.periodic import Periodic, run_all
from engine.shaping import persistence
from engine.shaping.clock import Clock
from engine.shaping.feedback import FeedbackStore, SenderState, ShapingEvent
from engine.shaping.keys import ShapingKeys
from engine.shaping.limiter import LevelStatus, RedisLimiter
from engine.shaping.model import (
    DeliverySignal,
    Provider,
    ShapeDecision,
    ShapeRequest,
    sender_domain,
)
from engine.shaping.providers import MxLookup, ProviderResolver, ProviderTable
from engine.shaping.reputation import PauseVerdict
from engine.shaping.scripts import ScriptRunner
from engine.shaping.store import TenantQuota, load_domain_ceilings, load_quotas
from engine.shaping.warmup import WarmupPlan, WarmupState

log = logging.getLogger("engine.shaping")

_MAX_BUFFER = 50_000  # recorded signals kept for the next flush before the oldest are dropped


class Shaper:
    """Shaping for one daemon instance; the state it enforces is shared through Redis."""

    def __init__(
        self,
        cfg: Config,
        client: aioredis.Redis | None,
        *,
        table: ProviderTable | None = None,
        mx_lookup: MxLookup | None = None,
        clock: Clock | None = None,
        split_nodes: bool | None = None,
        on_event: Callable[[ShapingEvent], None] | None = None,
    ) -> None:
        """``client`` may be None only with shaping disabled; ``clock`` None = Redis TIME."""
        self.cfg = cfg
        self.enabled = cfg.shaping.enabled
        if self.enabled and client is None:
            raise ShapingError("shaping is enabled but no Redis client was given")
        self.table = table or ProviderTable.from_config(cfg.shaping)
        self.providers = ProviderResolver(self.table, cfg.dns, mx_lookup)
        self.plan = WarmupPlan.from_config(cfg.shaping)
        self.keys = ShapingKeys(cfg.redis.prefix)
        self.quotas: dict[str, TenantQuota] = {}
        # (tenant, sender domain) → msg/s ceiling from a failed compliance check (throttle).
        self.domain_ceilings: dict[tuple[str, str], float] = {}
        self._client = client
        self._buffer: list[DeliverySignal] = []
        self._dirty_rates: set[tuple[str, str, str]] = set()
        self._dirty_senders: set[tuple[str, str]] = set()
        self.dropped_signals = 0
        if client is not None:
            runner = ScriptRunner(client)
            self.runner: ScriptRunner | None = runner
            self.limiter: RedisLimiter | None = RedisLimiter(
                client,
                self.keys,
                cfg.shaping,
                self.table,
                self.plan,
                tenant_rates=self._tenant_rate,
                sender_domain_rates=self._sender_domain_rate,
                clock=clock,
                split_nodes=split_nodes,
                runner=runner,
            )
            self.store: FeedbackStore | None = FeedbackStore(
                client,
                self.keys,
                cfg.shaping,
                self.table,
                self.plan,
                runner=runner,
                clock=clock,
                on_event=on_event,
            )
        else:
            self.runner = self.limiter = self.store = None

    def reload(self, cfg: Config) -> None:
        """Apply a reloaded configuration's ``[shaping]`` limits, providers, pause thresholds
        and warm-up plan; every level list is rebuilt from the next batch on.

        ``[shaping] enabled`` and ``[redis]`` are not live (see :mod:`engine.reload`). The
        provider table is built before anything is swapped, so an unreadable ``providers_file``
        raises and leaves the running limits in place.
        """
        table = ProviderTable.from_config(cfg.shaping)
        plan = WarmupPlan.from_config(cfg.shaping)
        self.cfg, self.table, self.plan = cfg, table, plan
        self.providers.use_table(table)
        if self.limiter is not None:
            self.limiter.reload(cfg.shaping, table, plan)
        if self.store is not None:
            self.store.reload(cfg.shaping, table, plan)

    # -- limits ---------------------------------------------------------------------------

    async def acquire(self, requests: Sequence[ShapeRequest]) -> list[ShapeDecision]:
        """One decision per request, in order; held requests consume nothing.

        Requests without a provider are resolved from ``recipient_domain`` (cache hits do not
        wait; DNS failures fall back to the domain as its own provider).
        """
        if not self.enabled or self.limiter is None:
            return [ShapeDecision.allow()] * len(requests)
        requests = await self._with_providers(requests)
        decisions = await self.limiter.acquire(requests)
        return [
            msgspec.structs.replace(d, provider=r.provider)
            for r, d in zip(requests, decisions, strict=True)
        ]

    async def _with_providers(self, requests: Sequence[ShapeRequest]) -> Sequence[ShapeRequest]:
        todo = {r.recipient_domain for r in requests if not r.provider}
        if not todo:
            return requests
        if "" in todo:
            raise ShapingError("a shape request needs a provider or a recipient_domain")
        found = await self.providers.resolve_many(todo)
        return [
            r
            if r.provider
            else msgspec.structs.replace(
                r, provider=found[r.recipient_domain.lower().rstrip(".")].name
            )
            for r in requests
        ]

    async def resolve_providers(self, domains: Iterable[str]) -> dict[str, Provider]:
        """Recipient domain → provider (see :meth:`ProviderResolver.resolve_many`)."""
        return await self.providers.resolve_many(domains)

    def provider_limits(self, name: str) -> Provider:
        """Ceiling rate, max connections and max messages per connection of a provider."""
        return self.table.get(name)

    def _tenant_rate(self, tenant_id: str) -> float:
        quota = self.quotas.get(tenant_id)
        if quota is None or quota.rate_per_s is None:
            return self.cfg.shaping.tenant_rate_per_s
        return quota.rate_per_s

    def _sender_domain_rate(self, tenant_id: str, sender: str) -> float:
        configured = self.cfg.shaping.sender_domain_rate_per_s
        ceiling = self.domain_ceilings.get((tenant_id, sender_domain(sender)))
        if ceiling is None:
            return configured
        # 0 configured means "no sender-domain level": the compliance ceiling then is the level.
        return ceiling if configured <= 0 else min(configured, ceiling)

    def set_domain_ceiling(self, tenant_id: str, domain: str, ceiling: float | None) -> None:
        """Cap (or, with None, uncap) a tenant's sender domain at ``ceiling`` msg/s now.

        The compliance service calls this when it throttles a failing domain, so the cap binds
        at once on this instance; other instances pick it up at their next quota refresh.
        """
        key = (tenant_id, domain.strip().lower().rstrip("."))
        before = self.domain_ceilings.get(key)
        if ceiling is None:
            self.domain_ceilings.pop(key, None)
        else:
            self.domain_ceilings[key] = ceiling
        if before != ceiling and self.limiter is not None:
            self.limiter.forget_levels()

    # -- feedback -------------------------------------------------------------------------

    async def feedback(self, signals: Sequence[DeliverySignal]) -> list[SenderState]:
        """Apply delivery signals now: AIMD rates, reputation windows, auto-pause, warm-up."""
        if not self.enabled or self.store is None or not signals:
            return []
        rates, senders = await self.store.apply(signals)
        self._dirty_rates.update(rates)
        self._dirty_senders.update((s.tenant_id, s.sender) for s in senders)
        return senders

    def record(self, signal: DeliverySignal | None) -> None:
        """Buffer a signal for the next :meth:`flush` (cheap; call it per relay outcome)."""
        if signal is None or not self.enabled:
            return
        if len(self._buffer) >= _MAX_BUFFER:
            # Redis has been unreachable for a long while: drop the oldest feedback rather than
            # grow without bound (it only tunes rates; no job depends on it).
            del self._buffer[: _MAX_BUFFER // 10]
            self.dropped_signals += _MAX_BUFFER // 10
        self._buffer.append(signal)

    async def flush(self) -> None:
        """Send buffered signals as one batch; on failure they stay buffered for the next try."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            await self.feedback(batch)
        except ShapingError:
            self._buffer[:0] = batch
            raise

    def tasks(
        self, pool: asyncpg.Pool | None, *, flush_s: float = 0.25, persist_s: float = 60.0
    ) -> list[Periodic]:
        """The daemon's background work: flush feedback often, persist state now and then;
        both once more when the daemon stops. Empty with shaping disabled."""
        if not self.enabled:
            return []
        flush = Periodic("shaping-feedback", self.flush, flush_s, at_start=False, on_stop=True)
        if pool is None:
            return [flush]

        async def save() -> None:
            await self.persist(pool)
            await self.refresh_quotas(pool)

        return [flush, Periodic("shaping-state", save, persist_s, at_start=False, on_stop=True)]

    async def run(
        self,
        stop: asyncio.Event,
        pool: asyncpg.Pool | None = None,
        *,
        flush_s: float = 0.25,
        persist_s: float = 60.0,
    ) -> None:
        """Run :meth:`tasks` until ``stop`` is set."""
        await run_all(self.tasks(pool, flush_s=flush_s, persist_s=persist_s), stop)

    # -- senders --------------------------------------------------------------------------

    async def is_paused(self, tenant_id: str, sender: str) -> PauseVerdict | None:
        """Why a sender is paused, or None (always None with shaping disabled)."""
        if not self.enabled or self.store is None:
            return None
        return await self.store.paused(tenant_id, sender)

    async def pause(
        self, tenant_id: str, sender: str, message: str = "paused by an operator"
    ) -> bool:
        """Pause a sender by hand; its jobs are held until :meth:`resume`."""
        if self.store is None:
            return False
        verdict = PauseVerdict(
            reason="operator", rate=0.0, threshold=0.0, attempts=0, message=message
        )
        self._dirty_senders.add((tenant_id, sender.lower()))
        return await self.store.pause(tenant_id, sender, verdict)

    async def resume(self, tenant_id: str, sender: str) -> bool:
        """Lift a pause (auto or manual); True if the sender was paused."""
        if self.store is None:
            return False
        self._dirty_senders.add((tenant_id, sender.lower()))
        return await self.store.resume(tenant_id, sender)

    async def warmup_state(self, tenant_id: str, sender: str) -> WarmupState | None:
        """Where a sender is in the warm-up plan (None: exempt, graduated or never sent)."""
        if self._client is None:
            return None
        try:
            stage, day = await self._client.hmget(
                self.keys.warmup(tenant_id, sender), ["stage", "day"]
            )
        except RedisError as exc:
            raise ShapingError(f"could not read the warm-up state of {sender}: {exc}") from exc
        if stage is None or day is None:
            return None
        return WarmupState(stage=int(stage), day=int(day))

    async def rate(self, tenant_id: str, sender: str, provider: str) -> float:
        """The adapted rate of sender x provider (the ceiling's start value if never adapted)."""
        ceiling = self.table.get(provider).rate_per_s
        if self._client is None:
            return ceiling
        try:
            raw = await self._client.hget(self.keys.rate(tenant_id, sender, provider), "rate")
        except RedisError as exc:
            raise ShapingError(f"could not read the rate of {sender} x {provider}: {exc}") from exc
        if raw is None:
            return max(self.cfg.shaping.min_rate_per_s, ceiling * self.cfg.shaping.aimd_initial)
        return min(float(raw), ceiling)

    async def peek(self, request: ShapeRequest) -> list[LevelStatus]:
        """Every level of one request, without consuming (``explain``)."""
        if self.limiter is None:
            return []
        (request,) = await self._with_providers([request])
        return await self.limiter.peek(request)

    # -- persistence ----------------------------------------------------------------------

    async def persist(self, pool: asyncpg.Pool) -> tuple[int, int]:
        """Write the rates and senders this instance touched since last time to PostgreSQL."""
        if self._client is None or not (self._dirty_rates or self._dirty_senders):
            return 0, 0
        rates, senders = self._dirty_rates, self._dirty_senders
        self._dirty_rates, self._dirty_senders = set(), set()
        try:
            return await persistence.persist(pool, self._client, self.keys, rates, senders)
        except EngineError:
            self._dirty_rates |= rates
            self._dirty_senders |= senders
            raise

    async def restore(self, pool: asyncpg.Pool) -> tuple[int, int]:
        """At start: put persisted rates, warm-up stages and pauses back where Redis lacks them."""
        if self._client is None:
            return 0, 0
        return await persistence.restore(pool, self._client, self.keys)

    async def refresh_quotas(self, pool: asyncpg.Pool) -> None:
        """Reload per-tenant rate ceilings and weights (``oltp.shaping_tenant_quotas``) and the
        compliance ceilings of throttled sender domains (``oltp.sender_compliance``)."""
        quotas = await load_quotas(pool)
        ceilings = await load_domain_ceilings(pool)
        if quotas != self.quotas or ceilings != self.domain_ceilings:
            self.quotas = quotas
            self.domain_ceilings = ceilings
            if self.limiter is not None:
                self.limiter.forget_levels()
