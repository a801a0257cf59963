"""``engine_jobs_enqueued_total`` counts jobs where they are committed (migration 105,
engine/queue/tally.py): every path, rollbacks and idempotent replays excluded, and each committed
job counted by exactly one of several concurrent drains (instances)."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson

from engine import metrics
from engine.enqueue import enqueue
from engine.queue import tally
from engine.store import tenants
from engine.tenancy import domains


def _job(i: int) -> dict[str, str]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k{i}",
        "from": "news@acme.example",
        "to": f"reader{i}@example.com",
        "text": "hello",
    }


def _counted() -> float:
    return metrics.REGISTRY.get_sample_value("engine_jobs_enqueued_total") or 0.0


async def test_committed_jobs_are_counted_once_whatever_the_path(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await domains.add(pool, "acme", "acme.example", verified=True)
    await tally.drain(pool)
    before = _counted()
    # SQL in the caller's transaction, committed: 30 jobs.
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetch(
            "SELECT * FROM engine.enqueue($1::jsonb)",
            [_job(i) for i in range(30)],  # the pool's jsonb codec encodes it
        )
    # SQL rolled back: nothing.
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.fetch(
            "SELECT * FROM engine.enqueue($1::jsonb)",
            [_job(i) for i in range(100, 150)],
        )
        await tx.rollback()
    # The Python service (CLI, API, client): 20 new jobs and 10 replays of committed ones.
    jobs = [orjson.dumps(_job(i)) for i in range(20, 50)]
    results = await enqueue(pool, jobs, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.job_id is not None for r in results)
    assert _counted() == before  # counted at the drain, not at the call
    # Five instances drain concurrently: each row goes to one of them.
    drained = await asyncio.gather(*(tally.drain(pool) for _ in range(5)))
    assert sum(drained) == 50
    assert _counted() - before == 50
    assert await tally.drain(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM queue.enqueue_tally") == 0
