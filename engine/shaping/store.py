"""Shaping state in PostgreSQL: the statements :mod:`engine.shaping.persistence` and the
shaper run (persisted rates and warm-up stages, paused senders, tenant and domain ceilings)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from engine.errors import StoreError

_UPSERT_RATES = """
INSERT INTO oltp.shaping_rates AS r (tenant_id, sender, provider, rate_per_s, decreased_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::timestamptz[])
ON CONFLICT (tenant_id, sender, provider) DO UPDATE
   SET rate_per_s = EXCLUDED.rate_per_s, decreased_at = EXCLUDED.decreased_at, updated_at = now()
"""

_UPSERT_SENDERS = """
INSERT INTO oltp.shaping_senders AS s (tenant_id, sender, warmup_stage, warmup_day, warmup_cap)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[])
ON CONFLICT (tenant_id, sender) DO UPDATE
   SET warmup_stage = EXCLUDED.warmup_stage, warmup_day = EXCLUDED.warmup_day,
       warmup_cap = EXCLUDED.warmup_cap, updated_at = now()
"""

#: Columns of ``oltp.shaping_rates``: tenants, senders, providers, rates, decreased_at.
RateColumns = tuple[list[str], list[str], list[str], list[float], list[datetime | None]]
#: Columns of ``oltp.shaping_senders``: tenants, senders, warm-up stage, day and cap.
SenderColumns = tuple[list[str], list[str], list[int | None], list[int | None], list[int | None]]


class TenantQuota(msgspec.Struct, frozen=True):
    """A tenant's overrides from ``oltp.shaping_tenant_quotas``."""

    rate_per_s: float | None  # None: the config default (the weight is the feeder's, store/jobs)


class PersistedState(msgspec.Struct, frozen=True):
    """What :func:`load_state` read: rates, warm-up rows and paused senders."""

    rates: list[asyncpg.Record]
    senders: list[asyncpg.Record]
    paused: list[asyncpg.Record]


async def save_state(pool: asyncpg.Pool, rates: RateColumns, senders: SenderColumns) -> None:
    """Upsert the rate and sender columns in one transaction (``unnest``, one statement each)."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            if rates[0]:
                await conn.execute(_UPSERT_RATES, *rates)
            if senders[0]:
                await conn.execute(_UPSERT_SENDERS, *senders)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"could not persist shaping state: {exc}") from exc


async def load_state(pool: asyncpg.Pool, *, max_age_days: int) -> PersistedState:
    """Rates updated in the last ``max_age_days``, every warm-up row and the paused senders."""
    try:
        async with pool.acquire() as conn:
            rates = await conn.fetch(
                "SELECT tenant_id, sender, provider, rate_per_s, decreased_at"
                " FROM oltp.shaping_rates WHERE updated_at > now() - make_interval(days => $1)",
                max_age_days,
            )
            senders = await conn.fetch(
                "SELECT tenant_id, sender, warmup_stage, warmup_day, warmup_cap"
                " FROM oltp.shaping_senders"
            )
            paused = await conn.fetch(
                "SELECT tenant_id, address, paused_reason FROM oltp.senders WHERE paused"
            )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"could not load persisted shaping state: {exc}") from exc
    return PersistedState(rates, senders, paused)


async def load_quotas(pool: asyncpg.Pool) -> dict[str, TenantQuota]:
    """Every tenant's overrides (a small table: read whole, refreshed periodically)."""
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT tenant_id, rate_per_s FROM oltp.shaping_tenant_quotas")
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"could not load tenant quotas: {exc}") from exc
    return {r["tenant_id"]: TenantQuota(r["rate_per_s"]) for r in rows}


async def load_domain_ceilings(pool: asyncpg.Pool) -> dict[tuple[str, str], float]:
    """(tenant, sender domain) → msg/s ceiling of every domain throttled by a compliance check
    (``[compliance] on_fail = "throttle"``; a small table, read whole)."""
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT tenant_id, domain, rate_ceiling_per_s FROM oltp.sender_compliance"
                " WHERE action = 'throttle' AND rate_ceiling_per_s IS NOT NULL"
            )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"could not load compliance rate ceilings: {exc}") from exc
    return {(r["tenant_id"], r["domain"]): r["rate_ceiling_per_s"] for r in rows}
