"""Per-tenant daily message quota (``oltp.tenants.daily_quota``; NULL = no quota).

Enforced at send time, not at enqueue: a tenant may queue a campaign larger than its quota, and
the part past today's quota simply waits for the next UTC day. The count is today's ``relayed``
in ``olap.daily_stats`` (what actually left; deferrals and refusals do not use quota), so it lags
the send path by one outcome flush (~20 ms) — a quota of 100 000 may be overshot by the mail in
flight at that moment, never by more.

The dispatcher side (docs/compliance.md): :class:`engine.senders.service.PausedSenders` refreshes
:func:`over_quota` next to the paused senders, and the dispatcher holds the jobs of those tenants
until :func:`seconds_to_reset` (reply "tenant daily quota reached").
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from engine.store.pool import apart


class QuotaUse(msgspec.Struct, frozen=True):
    """A tenant's quota and what it relayed today (UTC)."""

    tenant_id: str
    daily_quota: int
    relayed_today: int

    @property
    def exhausted(self) -> bool:
        return self.relayed_today >= self.daily_quota


async def set_daily_quota(pool: asyncpg.Pool, tenant_id: str, quota: int | None) -> bool:
    """Set (or with None lift) a tenant's daily quota; False if the tenant does not exist."""
    if quota is not None and quota < 0:
        raise ValueError("a daily quota cannot be negative")
    res: str = await pool.execute(
        "UPDATE oltp.tenants SET daily_quota = $2 WHERE tenant_id = $1", tenant_id, quota
    )
    return res.endswith(" 1")


async def usage(
    pool: asyncpg.Pool, tenant_id: str | None = None, olap: asyncpg.Pool | None = None
) -> list[QuotaUse]:
    """Quota and today's relayed count of every tenant with a quota (or just one).

    ``olap``: the olap tier's pool when it lives on another server (two queries then, the
    quotas from ``pool``, the counts from ``olap``)."""
    olap = apart(olap, pool)
    if olap is not None:
        return await _usage_apart(pool, olap, tenant_id)
    rows = await pool.fetch(
        "SELECT t.tenant_id, t.daily_quota, coalesce(sum(s.relayed), 0)::bigint AS relayed"
        " FROM oltp.tenants t LEFT JOIN olap.daily_stats s ON s.tenant_id = t.tenant_id"
        " AND s.day = (now() AT TIME ZONE 'UTC')::date"
        " WHERE t.daily_quota IS NOT NULL AND ($1::text IS NULL OR t.tenant_id = $1)"
        " GROUP BY t.tenant_id, t.daily_quota ORDER BY t.tenant_id",
        tenant_id,
    )
    return [QuotaUse(r["tenant_id"], r["daily_quota"], r["relayed"]) for r in rows]


async def _usage_apart(
    pool: asyncpg.Pool, olap: asyncpg.Pool, tenant_id: str | None
) -> list[QuotaUse]:
    quotas = await pool.fetch(
        "SELECT tenant_id, daily_quota FROM oltp.tenants"
        " WHERE daily_quota IS NOT NULL AND ($1::text IS NULL OR tenant_id = $1)"
        " ORDER BY tenant_id",
        tenant_id,
    )
    if not quotas:
        return []
    # Today by the olap server's clock, as the one-server query takes it.
    counts = await olap.fetch(
        "SELECT tenant_id, sum(relayed)::bigint AS relayed FROM olap.daily_stats"
        " WHERE tenant_id = ANY($1::text[]) AND day = (now() AT TIME ZONE 'UTC')::date"
        " GROUP BY tenant_id",
        [r["tenant_id"] for r in quotas],
    )
    relayed = {r["tenant_id"]: r["relayed"] for r in counts}
    return [
        QuotaUse(r["tenant_id"], r["daily_quota"], relayed.get(r["tenant_id"], 0)) for r in quotas
    ]


async def over_quota(pool: asyncpg.Pool, olap: asyncpg.Pool | None = None) -> set[str]:
    """Tenants that have used today's quota: hold their jobs until the next UTC day."""
    return {u.tenant_id for u in await usage(pool, olap=olap) if u.exhausted}


def seconds_to_reset(now: dt.datetime | None = None) -> float:
    """Seconds until the quota day (UTC) turns over; the hold time for an exhausted tenant."""
    now = now or dt.datetime.now(dt.UTC)
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return max(1.0, (tomorrow - now).total_seconds())
