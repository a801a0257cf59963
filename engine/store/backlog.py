"""Queue tier: the backlog, jobs waiting in PostgreSQL, counted without touching finished ones.

``engine_backlog_jobs``, ``engine status`` and ``GET /v1/queues`` all read it here. The count
is an index-only scan of ``jobs_waiting`` (migration 100, partial on queued/deferred) plus the
small ``jobs_leased_until`` index for jobs in flight: its cost follows the waiting and in-flight
jobs, never the weeks of finished ones beside them. Held jobs (``engine messages hold``) are
reported as their own ``held`` bucket, not as queued or deferred.
"""

from __future__ import annotations

import asyncpg
import msgspec

from engine.model import Priority
from engine.store.pool import Conn

#: The buckets of the backlog, in display order.
BACKLOG_STATES = ("queued", "deferred", "held")


class Backlog(msgspec.Struct, frozen=True):
    """Waiting jobs by bucket (queued, deferred, held) and priority, and jobs in flight;
    ``states``: the same jobs by their job state (a held job is queued or deferred)."""

    waiting: dict[str, dict[str, int]]  # bucket -> priority label -> count
    sending: int
    states: dict[str, int]  # queued, deferred (held ones included), sending

    def by_state(self) -> dict[str, int]:
        return {state: sum(per.values()) for state, per in self.waiting.items()}


async def read(pool: asyncpg.Pool | Conn) -> Backlog:
    """The backlog now (two index scans over waiting and in-flight jobs only)."""
    rows = await pool.fetch(
        "SELECT priority, state, held_at IS NOT NULL AS held, count(*) AS n FROM queue.jobs"
        " WHERE state IN ('queued', 'deferred') GROUP BY 1, 2, 3"
    )
    waiting = {s: {p.label: 0 for p in Priority} for s in BACKLOG_STATES}
    states = {"queued": 0, "deferred": 0}
    for r in rows:
        bucket = "held" if r["held"] else r["state"]
        waiting[bucket][Priority(r["priority"]).label] += int(r["n"])
        states[r["state"]] += int(r["n"])
    sending = int(
        await pool.fetchval(
            "SELECT count(*) FROM queue.jobs WHERE state = 'sending' AND lease_until IS NOT NULL"
        )
        or 0
    )
    return Backlog(waiting=waiting, sending=sending, states={**states, "sending": sending})
