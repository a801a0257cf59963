"""Refresh the gauges that describe state rather than events: queue depth and age, pools.

Runs next to the daemon's loops, every few seconds; every query is an index probe or a Redis
XLEN, never a scan of the jobs table (the per-tenant breakdown, a GROUP BY over waiting jobs, runs
only with ``[admin] tenant_metrics`` and at a slower pace). A failing source is logged once per
change of error and retried at the next round; the collector never stops the daemon.

The backlog (``engine_backlog_jobs``) describes PostgreSQL, which every instance shares: it is
counted and exported by one instance at a time, the holder of a Redis lease
(:class:`BacklogLease`), so a dashboard's sum over instances is the truth and PostgreSQL counts
it once per round, not once per instance. The others export no series; while Redis is down
nobody holds the lease and the series is absent (docs/operations.md, "Backlog").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from prometheus_client import Gauge

from engine import metrics
from engine.admin.context import AdminContext
from engine.periodic import Periodic, run_until
from engine.store import backlog as backlog_store
from engine.store import messages as message_store
from engine.store import olap_outbox

log = logging.getLogger("engine.admin")

INTERVAL_S = 5.0
TENANT_EVERY = 6  # rounds between per-tenant refreshes (30 s at the default interval)
TOP_TENANTS = 50  # at most this many tenant label values, whatever the number of tenants


async def _streams(ctx: AdminContext) -> None:
    for priority, n in (await ctx.streams.depth()).items():
        metrics.QUEUE_DEPTH.labels(priority).set(n)


async def _ages(ctx: AdminContext) -> None:
    for priority, age in (await ctx.read(message_store.oldest_due_age_s)).items():
        metrics.QUEUE_OLDEST_AGE.labels(priority).set(age)


# Take the lease when free, renew it when ours; 1 when we hold it after the call.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
elseif holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""


class BacklogLease:
    """Which instance exports the backlog: a Redis key naming the holder, renewed each round
    and expiring after three missed rounds (a dead holder is replaced within ``ttl_s``)."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: float) -> None:
        self.client = client
        self.key = f"{prefix}:backlog:leader"
        self.me = secrets.token_hex(8)
        self.ttl_ms = int(ttl_s * 1000)

    async def hold(self) -> bool:
        """Take or renew the lease; True while this instance holds it."""
        got = await self.client.eval(_LEASE, 1, self.key, self.me, self.ttl_ms)
        return bool(got)


async def export_backlog(ctx: AdminContext, lease: BacklogLease) -> bool:
    """Count and export the backlog when this instance holds the lease; clear it otherwise.
    Returns whether it was exported."""
    try:
        leader = await lease.hold()
    except Exception:
        _drop_backlog()  # no lease without Redis: nobody exports rather than everybody
        raise
    if not leader:
        _drop_backlog()
        return False
    backlog = await ctx.read(backlog_store.read)
    for state, per in backlog.waiting.items():
        for priority, n in per.items():
            metrics.BACKLOG.labels(state, priority).set(n)
    metrics.BACKLOG_LEADER.set(1)
    return True


def _drop_backlog() -> None:
    _reset(metrics.BACKLOG)
    metrics.BACKLOG_LEADER.set(0)


def _reset(gauge: Gauge) -> None:
    """Forget every labelled value of ``gauge``. With several workers the values live in shared
    files that ``clear()`` cannot reach, so each series this process set is set to 0 there."""
    if metrics.MULTIPROCESS:
        for labels in list(gauge._metrics):
            gauge.labels(*labels).set(0)
    else:
        gauge.clear()


async def _pools(ctx: AdminContext) -> None:
    for node in ctx.relay.snapshot():
        metrics.POOL_CONNECTIONS.labels(node.name, "open").set(node.connections_open)
        metrics.POOL_CONNECTIONS.labels(node.name, "in_use").set(node.connections_in_use)
        metrics.RELAY_NODE_UP.labels(node.name).set(1 if node.healthy else 0)
    pool = ctx.pool
    metrics.DB_POOL_CONNECTIONS.labels("open").set(pool.get_size())
    metrics.DB_POOL_CONNECTIONS.labels("idle").set(pool.get_idle_size())
    metrics.DB_POOL_CONNECTIONS.labels("max").set(pool.get_max_size())


async def _olap_outbox(ctx: AdminContext) -> None:
    """How far the olap server's counts lag (only with [database.olap] on another server)."""
    rows, age = await olap_outbox.backlog(ctx.pool)
    metrics.OLAP_OUTBOX_ROWS.set(rows)
    metrics.OLAP_OUTBOX_OLDEST_AGE.set(age)


async def _tenants(ctx: AdminContext) -> None:
    busiest = await ctx.read(lambda p: message_store.pending_by_tenant(p, TOP_TENANTS))
    # Replace the whole set: a tenant that dropped out of the top must not keep a stale value.
    _reset(metrics.QUEUE_TENANT_PENDING)
    for t in busiest:
        metrics.QUEUE_TENANT_PENDING.labels(t.tenant_id).set(t.queued + t.deferred)


class Collector:
    """One refresh round at a time; remembers the last error of each source to log changes."""

    def __init__(self, ctx: AdminContext, interval_s: float = INTERVAL_S) -> None:
        self.ctx = ctx
        self.rounds = 0
        self.lease = BacklogLease(ctx.streams.client, ctx.streams.prefix, 3 * interval_s)
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

    async def _backlog(self, ctx: AdminContext) -> None:
        await export_backlog(ctx, self.lease)

    async def collect(self) -> None:
        """Refresh every gauge once."""
        parts: list[tuple[str, Callable[[AdminContext], Awaitable[None]]]] = [
            ("redis", _streams),
            ("postgresql", _ages),
            ("pools", _pools),
            ("backlog", self._backlog),
        ]
        if self.ctx.olap is not self.ctx.pool:
            parts.append(("olap-outbox", _olap_outbox))
        if self.ctx.cfg.admin.tenant_metrics and self.rounds % TENANT_EVERY == 0:
            parts.append(("tenants", _tenants))
        self.rounds += 1
        await asyncio.gather(*(self._one(name, part) for name, part in parts))


def task(ctx: AdminContext, interval_s: float = INTERVAL_S) -> Periodic:
    """Refresh the gauges every ``interval_s`` from start-up (a source down is logged by the
    collector itself, once per change)."""
    return Periodic("metrics-collector", Collector(ctx, interval_s).collect, interval_s)


async def run_collector(
    ctx: AdminContext, stop: asyncio.Event, interval_s: float = INTERVAL_S
) -> None:
    """Refresh the gauges every ``interval_s`` until ``stop`` is set."""
    await run_until(task(ctx, interval_s), stop)
