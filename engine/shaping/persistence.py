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

from engine.errors import ShapingError
from engine.shaping import store
from engine.shaping.keys import ShapingKeys
from engine.shaping.reputation import PauseVerdict

_MONTH_MS = 30 * 86400 * 1000
_CHUNK = 1000


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
    r_cols: store.RateColumns = ([], [], [], [], [])
    for (t, s, p), (rate, dec) in zip(rate_keys, values[: len(rate_keys)], strict=True):
        if rate is None:
            continue  # expired in Redis: nothing newer to keep
        r_cols[0].append(t)
        r_cols[1].append(s)
        r_cols[2].append(p)
        r_cols[3].append(float(rate))
        r_cols[4].append(None if dec is None else datetime.fromtimestamp(float(dec) / 1000, UTC))
    s_cols: store.SenderColumns = ([], [], [], [], [])
    for (t, s), (stage, day, cap) in zip(sender_keys, values[len(rate_keys) :], strict=True):
        s_cols[0].append(t)
        s_cols[1].append(s)
        s_cols[2].append(_int(stage))
        s_cols[3].append(_int(day))
        s_cols[4].append(_int(cap))
    await store.save_state(pool, r_cols, s_cols)
    return len(r_cols[0]), len(s_cols[0])


async def restore(
    pool: asyncpg.Pool, client: aioredis.Redis, keys: ShapingKeys, *, max_age_days: int = 30
) -> tuple[int, int]:
    """Write persisted rates and senders back into Redis where keys are missing."""
    state = await store.load_state(pool, max_age_days=max_age_days)
    rates, senders, paused = state.rates, state.senders, state.paused
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


def _chunks(rows: Sequence[asyncpg.Record]) -> Iterable[Sequence[asyncpg.Record]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i : i + _CHUNK]
