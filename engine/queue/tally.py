"""``engine_jobs_enqueued_total`` counted where jobs are committed, whatever the path.

A trigger on ``queue.jobs`` appends the row count of every committed INSERT to
``queue.enqueue_tally`` (migration 105): the Python enqueue, SQL ``engine.enqueue(jsonb)`` inside
a platform service's own transaction, the client, the admin API. Every daemon drains that table
every few seconds and adds what it deleted to its counter; a row is deleted by one daemon only,
so summing the counter over instances (and workers) gives the jobs committed, each counted once.
The drain runs once more at shutdown so a stopping instance hands nothing over uncounted.
"""

from __future__ import annotations

import asyncpg

from engine import metrics
from engine.periodic import Periodic
from engine.store import jobs as job_store

INTERVAL_S = 5.0


async def drain(pool: asyncpg.Pool) -> int:
    """Count what was committed since the last drain (by any instance); returns the jobs."""
    n = await job_store.drain_enqueue_tally(pool)
    if n:
        metrics.ENQUEUED.inc(n)
    return n


def task(pool: asyncpg.Pool) -> Periodic:
    """The periodic drain (``enqueue-tally``), with a final one when the daemon stops."""

    async def round_() -> None:
        await drain(pool)

    return Periodic("enqueue-tally", round_, INTERVAL_S, on_stop=True)
