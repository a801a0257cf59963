"""engine_backlog_jobs: counted from PostgreSQL, exported by one instance at a time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import metrics
from engine.admin.collector import BacklogLease, export_backlog
from engine.admin.context import AdminContext
from engine.config import Config
from engine.enqueue import enqueue
from engine.messages import actions
from engine.store import tenants
from engine.store.message_actions import BulkAction, Selection
from engine.store.pool import Reads


def _samples() -> dict[tuple[str, str], float]:
    return {
        (s.labels["state"], s.labels["priority"]): s.value
        for m in metrics.REGISTRY.collect()
        if m.name == "engine_backlog_jobs"
        for s in m.samples
    }


async def test_one_instance_exports_the_backlog(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await tenants.add(pool, "acme")
    jobs = [
        b'{"tenant_id":"acme","idempotency_key":"k%d","from":"a@acme.example",'
        b'"to":"u%d@example.com","text":"x","priority":"%s"}' % (i, i, p)
        for i, p in enumerate([b"high", b"normal", b"normal", b"low"])
    ]
    ids = [r.job_id for r in await enqueue(pool, jobs, max_message_bytes=10**6, max_age_s=60)]
    await pool.execute("UPDATE queue.jobs SET state = 'deferred' WHERE id = $1", ids[3])
    await actions.run(pool, BulkAction.HOLD, Selection(job_id=ids[2]), actor="t")
    ctx = cast(AdminContext, SimpleNamespace(pool=pool, read=Reads(pool).run))
    first = BacklogLease(redis_client, cfg.redis.prefix, ttl_s=0.5)
    second = BacklogLease(redis_client, cfg.redis.prefix, ttl_s=0.5)
    assert await export_backlog(ctx, first) is True
    got = _samples()
    assert got[("queued", "high")] == 1 and got[("queued", "normal")] == 1
    assert got[("held", "normal")] == 1 and got[("deferred", "low")] == 1
    assert sum(got.values()) == 4
    assert await export_backlog(ctx, second) is False  # the other instance exports nothing
    assert _samples() == {}
    assert metrics.BACKLOG_LEADER._value.get() == 0  # type: ignore[attr-defined]
    assert await export_backlog(ctx, first) is True  # renewed, still the holder
    await asyncio.sleep(0.7)  # the holder stops renewing: the other takes over
    assert await export_backlog(ctx, second) is True
    assert await first.hold() is False


async def test_without_redis_nobody_exports(pool: asyncpg.Pool) -> None:
    down: Any = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    ctx = cast(AdminContext, SimpleNamespace(pool=pool, read=Reads(pool).run))
    metrics.BACKLOG.labels("queued", "high").set(7)
    try:
        with pytest.raises(RedisConnectionError):  # the collector logs it as a failed source
            await export_backlog(ctx, BacklogLease(down, "x", ttl_s=1))
    finally:
        await down.aclose()
    assert _samples() == {}
