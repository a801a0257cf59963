"""Shaping state in PostgreSQL (oltp tier), so a restart or a Redis flush does not reset it.

Redis holds the live values every instance shares; each instance remembers which sender x
provider rates and which senders its own feedback touched, and :func:`persist` copies their
current Redis values to ``oltp.shaping_rates`` / ``oltp.shaping_senders`` in one batched
statement each (``unnest``). :func:`restore` runs at start and writes rows back only into keys
Redis does not have (``HSETNX`` / ``SET NX``), so it never overwrites fresher live values; it
also fills the Redis cache of paused senders from their truth, ``oltp.senders``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import ShapingError, StoreError
from engine.shaping.keys import ShapingKeys
from engine.shaping.reputation import PauseVerdict

_MONTH_MS = 30 * 86400 * 1000
_CHUNK = 1000

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


class TenantQuota(msgspec.Struct, frozen=True):
    """A tenant's overrides from ``oltp.shaping_tenant_quotas``."""

    rate_per_s: float | None  # None: the config default (the weight is the feeder's, store/jobs)


def _int(v: bytes | None) -> int | None:
    return None if v is None else int(float(v))


async def persist(
    pool: asyncpg.Pool,
    client: aioredis.Redis,
    keys: ShapingKeys,
    rates: Iterable[tuple[str, str, str]],
    senders: Iterable[tuple[str, str]],
) -> tuple[int, int]:
    """Copy the listed rates and senders from Redis to PostgreSQL; returns rows written."""
    rate_keys = list(rates)
    sender_keys = list(senders)
    try:
        pipe = client.pipeline(transaction=False)
        for t, s, p in rate_keys:
            pipe.hmget(keys.rate(t, s, p), ["rate", "dec"])
        for t, s in sender_keys:
            pipe.hmget(keys.warmup(t, s), ["stage", "day", "cap"])
        values = await pipe.execute() if rate_keys or sender_keys else []
    except RedisError as exc:
        raise ShapingError(f"could not read shaping state to persist: {exc}") from exc
    r_cols: tuple[list[str], list[str], list[str], list[float], list[datetime | None]] = (
        [], [], [], [], []
    )  # fmt: skip
    for (t, s, p), (rate, dec) in zip(rate_keys, values[: len(rate_keys)], strict=True):
        if rate is None:
            continue  # expired in Redis: nothing newer to keep
        r_cols[0].append(t)
        r_cols[1].append(s)
        r_cols[2].append(p)
        r_cols[3].append(float(rate))
        r_cols[4].append(None if dec is None else datetime.fromtimestamp(float(dec) / 1000, UTC))
    s_cols: tuple[list[str], list[str], list[int | None], list[int | None], list[int | None]] = (
        [], [], [], [], []
    )  # fmt: skip
    for (t, s), (stage, day, cap) in zip(sender_keys, values[len(rate_keys) :], strict=True):
        s_cols[0].append(t)
        s_cols[1].append(s)
        s_cols[2].append(_int(stage))
        s_cols[3].append(_int(day))
        s_cols[4].append(_int(cap))
    try:
        async with pool.acquire() as conn, conn.transaction():
            if r_cols[0]:
                await conn.execute(_UPSERT_RATES, *r_cols)
            if s_cols[0]:
                await conn.execute(_UPSERT_SENDERS, *s_cols)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"could not persist shaping state: {exc}") from exc
    return len(r_cols[0]), len(s_cols[0])


async def restore(
    pool: asyncpg.Pool, client: aioredis.Redis, keys: ShapingKeys, *, max_age_days: int = 30
) -> tuple[int, int]:
    """Write persisted rates and senders back into Redis where keys are missing."""
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
    try:
        for chunk in _chunks(rates):
            pipe = client.pipeline(transaction=False)
            for row in chunk:
                k = keys.rate(row["tenant_id"], row["sender"], row["provider"])
                pipe.hsetnx(k, "rate", repr(float(row["rate_per_s"])))
                if row["decreased_at"] is not None:
                    pipe.hsetnx(k, "dec", repr(row["decreased_at"].timestamp() * 1000))
                pipe.pexpire(k, _MONTH_MS)
            await pipe.execute()
        for chunk in _chunks(senders):
            pipe = client.pipeline(transaction=False)
            for row in chunk:
                t, s = row["tenant_id"], row["sender"]
                if row["warmup_stage"] is not None:
                    k = keys.warmup(t, s)
                    pipe.hsetnx(k, "stage", row["warmup_stage"])
                    pipe.hsetnx(k, "day", row["warmup_day"])
                    pipe.hsetnx(k, "cap", row["warmup_cap"])
            await pipe.execute()
        for chunk in _chunks(paused):
            pipe = client.pipeline(transaction=False)
            for row in chunk:
                reason = row["paused_reason"] or "paused"
                verdict = PauseVerdict("restored", 0.0, 0.0, 0, reason)
                key = keys.pause(row["tenant_id"], row["address"])
                pipe.set(key, msgspec.json.encode(verdict), nx=True)
            await pipe.execute()
    except RedisError as exc:
        raise ShapingError(f"could not restore shaping state into Redis: {exc}") from exc
    return len(rates), len(senders)


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


def _chunks(rows: Sequence[asyncpg.Record]) -> Iterable[Sequence[asyncpg.Record]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i : i + _CHUNK]
