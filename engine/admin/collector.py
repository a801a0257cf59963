"""Refresh the gauges that describe state rather than events: queue depth and age, pools.

Runs next to the daemon's loops, every few seconds; every query is an index probe or a Redis
XLEN, never a scan of the jobs table (the per-tenant breakdown, a GROUP BY over waiting jobs, runs
only with ``[admin] tenant_metrics`` and at a slower pace). A failing source is logged once per
change of error and retried at the next round; the collector never stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine import metrics
from engine.admin.context import AdminContext
from engine.periodic import Periodic, run_until
from engine.store import messages as message_store

log = logging.getLogger("engine.admin")

INTERVAL_S = 5.0
TENANT_EVERY = 6  # rounds between per-tenant refreshes (30 s at the default interval)
TOP_TENANTS = 50  # at most this many tenant label values, whatever the number of tenants


async def _streams(ctx: AdminContext) -> None:
    for priority, n in (await ctx.streams.depth()).items():
        metrics.QUEUE_DEPTH.labels(priority).set(n)


async def _ages(ctx: AdminContext) -> None:
    for priority, age in (await message_store.oldest_due_age_s(ctx.pool)).items():
        metrics.QUEUE_OLDEST_AGE.labels(priority).set(age)


async def _pools(ctx: AdminContext) -> None:
    for node in ctx.relay.snapshot():
        metrics.POOL_CONNECTIONS.labels(node.name, "open").set(node.connections_open)
        metrics.POOL_CONNECTIONS.labels(node.name, "in_use").set(node.connections_in_use)
        metrics.RELAY_NODE_UP.labels(node.name).set(1 if node.healthy else 0)
    pool = ctx.pool
    metrics.DB_POOL_CONNECTIONS.labels("open").set(pool.get_size())
    metrics.DB_POOL_CONNECTIONS.labels("idle").set(pool.get_idle_size())
    metrics.DB_POOL_CONNECTIONS.labels("max").set(pool.get_max_size())


async def _tenants(ctx: AdminContext) -> None:
    busiest = await message_store.pending_by_tenant(ctx.pool, TOP_TENANTS)
    # Replace the whole set: a tenant that dropped out of the top must not keep a stale value.
    # With several workers the values live in shared files that clear() cannot reach: a
    # dropped tenant is set to 0 there instead.
    if metrics.MULTIPROCESS:
        for labels in list(metrics.QUEUE_TENANT_PENDING._metrics):
            metrics.QUEUE_TENANT_PENDING.labels(*labels).set(0)
    else:
        metrics.QUEUE_TENANT_PENDING.clear()
    for t in busiest:
        metrics.QUEUE_TENANT_PENDING.labels(t.tenant_id).set(t.queued + t.deferred)


class Collector:
    """One refresh round at a time; remembers the last error of each source to log changes."""

    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx
        self.rounds = 0
        self._errors: dict[str, str] = {}

    async def _one(self, name: str, part: Callable[[AdminContext], Awaitable[None]]) -> None:
        try:
            await part(self.ctx)
        except Exception as exc:  # a source being down is reported, not fatal
            text = str(exc) or type(exc).__name__
            if self._errors.get(name) != text:
                log.warning(
                    "metrics collector: source failed", extra={"source": name, "error": text}
                )
            self._errors[name] = text
            return
        if self._errors.pop(name, None) is not None:
            log.info("metrics collector: source recovered", extra={"source": name})

    async def collect(self) -> None:
        """Refresh every gauge once."""
        parts: list[tuple[str, Callable[[AdminContext], Awaitable[None]]]] = [
            ("redis", _streams),
            ("postgresql", _ages),
            ("pools", _pools),
        ]
        if self.ctx.cfg.admin.tenant_metrics and self.rounds % TENANT_EVERY == 0:
            parts.append(("tenants", _tenants))
        self.rounds += 1
        await asyncio.gather(*(self._one(name, part) for name, part in parts))


def task(ctx: AdminContext, interval_s: float = INTERVAL_S) -> Periodic:
    """Refresh the gauges every ``interval_s`` from start-up (a source down is logged by the
    collector itself, once per change)."""
    return Periodic("metrics-collector", Collector(ctx).collect, interval_s)


async def run_collector(
    ctx: AdminContext, stop: asyncio.Event, interval_s: float = INTERVAL_S
) -> None:
    """Refresh the gauges every ``interval_s`` until ``stop`` is set."""
    await run_until(task(ctx, interval_s), stop)
