"""Feeding: which due jobs go to the Redis streams next, in tenants' turns, and the repairs of
pushed jobs (``queue.jobs.pushed_at``).

The feeder (engine/queue/feeder.py) takes due jobs a priority at a time, a few per tenant per
round in the tenants' weighted turns, and marks them pushed in the same statement; the
reconciler re-pushes what Redis lost. Every function is one round trip for a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from engine.store.pool import Conn

# The tenants with unpushed jobs of a priority after a cursor, in tenant order, at most $3: a
# skip scan of jobs_waiting_due, one probe per such tenant and none for idle ones. The index
# holds pushed jobs too (migration 150: no index names pushed_at, so the push mark is a HOT
# update); a probe steps over a tenant's pushed jobs, at most what the streams hold.
_WAITING_TENANTS = """
WITH RECURSIVE waiting AS (
    (SELECT q.tenant_id, 1 AS n FROM queue.jobs q
      WHERE q.priority = $1 AND q.state IN ('queued', 'deferred') AND q.pushed_at IS NULL
        AND q.tenant_id > $2
      ORDER BY q.tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.tenant_id FROM queue.jobs q
             WHERE q.priority = $1 AND q.state IN ('queued', 'deferred') AND q.pushed_at IS NULL
               AND q.tenant_id > w.tenant_id
             ORDER BY q.tenant_id LIMIT 1), w.n + 1
      FROM waiting w WHERE w.tenant_id IS NOT NULL AND w.n < $3
)
SELECT tenant_id FROM waiting WHERE tenant_id IS NOT NULL
"""

# Up to $3 · weight due jobs of each listed tenant (locked), then the weighted round-robin prefix
# of $4 of them: a tenant's n-th job has the turn n / weight ($5, the weights of $2), and jobs go
# in turn order, ties in list order: with equal weights every tenant's first job before anyone's
# second, and a tenant of weight 2 gets two turns for each one of a tenant of weight 1.
# jobs_waiting_due is the only index these conditions can use since migration 073 dropped
# jobs_due (priority, due time), which a planner with stale statistics preferred while it
# filtered on the tenant, reading every due job of the priority for each tenant. The update
# finds its rows by ctid (a locked row keeps it until we commit) in an array, which can only be
# a TID scan: joined on the keys, the planner can take a hash join over a sequential scan of
# queue.jobs when it thinks the table small next to the batch.
_TAKE_DUE_FAIR = """
WITH per_tenant AS (
    SELECT x.tid, t.ord,
           row_number() OVER (PARTITION BY x.tenant_id ORDER BY x.next_attempt_at) / t.weight
               AS turn
      FROM unnest($2::text[], $5::float8[]) WITH ORDINALITY AS t(tenant_id, weight, ord)
      CROSS JOIN LATERAL (
            SELECT q.ctid AS tid, q.tenant_id, q.next_attempt_at FROM queue.jobs q
             WHERE q.priority = $1 AND q.tenant_id = t.tenant_id
               AND q.state IN ('queued', 'deferred') AND q.pushed_at IS NULL
               AND q.next_attempt_at <= now()
             ORDER BY q.next_attempt_at LIMIT least($4, ceil($3 * t.weight))::int
             FOR UPDATE SKIP LOCKED) x),
picked AS (SELECT tid FROM per_tenant ORDER BY turn, ord LIMIT $4)
UPDATE queue.jobs j SET pushed_at = now()
 WHERE j.ctid = ANY(ARRAY(SELECT tid FROM picked))
RETURNING j.id, j.tenant_id, j.priority, j.next_attempt_at
"""


def _in_turns(
    rows: Sequence[asyncpg.Record], tenants: Sequence[str], weights: Sequence[float]
) -> list[asyncpg.Record]:
    """``rows`` in weighted round-robin order, as the query picked them: a tenant's n-th job
    (by due time) has the turn n / weight, ties in ``tenants`` order (RETURNING order is
    arbitrary)."""
    place = {t: i for i, t in enumerate(tenants)}
    weight = dict(zip(tenants, weights, strict=True))
    turn: dict[int, float] = {}
    seen: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"])):
        seen[r["tenant_id"]] = seen.get(r["tenant_id"], 0) + 1
        turn[r["id"]] = seen[r["tenant_id"]] / weight[r["tenant_id"]]
    return sorted(rows, key=lambda r: (turn[r["id"]], place[r["tenant_id"]]))


class FeedCursor:
    """Where each priority's tenant rotation stands between feeder rounds (one per feeder)."""

    def __init__(self, priorities: int = 3) -> None:
        self.after = [""] * priorities  # the last tenant visited; "" = from the first
        # Set by take_due: some priority had more tenants waiting than its round visited and
        # has not come round to its first ones again (the feeder goes on at once).
        self.more = False


async def tenant_weights(conn: Conn, tenants: Sequence[str]) -> list[float]:
    """The fair-share weight of each tenant (``oltp.shaping_tenant_quotas``; 1 without a row)."""
    rows = await conn.fetch(
        "SELECT tenant_id, weight FROM oltp.shaping_tenant_quotas WHERE tenant_id = ANY($1)",
        list(tenants),
    )
    found = {r["tenant_id"]: float(r["weight"]) for r in rows}
    return [found.get(t, 1.0) for t in tenants]


async def waiting_tenants(
    conn: Conn, priority: int, after: str, limit: int
) -> tuple[list[str], bool]:
    """Up to ``limit`` tenants with unpushed jobs of ``priority``, in tenant order from just
    after ``after`` and round to the first ones; and whether that went all the way round (True:
    every such tenant is in the list)."""
    first = [r[0] for r in await conn.fetch(_WAITING_TENANTS, priority, after, limit)]
    if len(first) == limit:
        return first, False
    if not after:
        return first, True
    room = limit - len(first)
    wrapped = [r[0] for r in await conn.fetch(_WAITING_TENANTS, priority, "", room)]
    kept = [t for t in wrapped if t <= after]
    return first + kept, len(wrapped) < room or len(kept) < len(wrapped)


async def take_due(
    conn: Conn, limits: Sequence[int], cursor: FeedCursor | None = None
) -> list[asyncpg.Record]:
    """Mark up to ``limits[p]`` due, unpushed jobs of each priority as pushed; return them.

    Each priority gets its own share so a flood of high-priority jobs cannot starve low ones,
    and within a priority tenants take turns in proportion to their fair-share weight
    (``oltp.shaping_tenant_quotas.weight``, 1 by default: every tenant's first job before
    anyone's second), so a 1M-recipient campaign cannot delay another tenant's mail. A round
    visits at most ``limits[p]`` tenants, from just after where the previous round stopped
    (``cursor``), so a round locks at most about twice its limit in rows whatever the number of
    tenants, and with more tenants waiting than one round serves the next rounds go on round the
    ring. Must run inside the transaction that pushes them to Redis
    (SKIP LOCKED splits work between instances; a crash before commit leaves them unpushed).
    """
    cursor = cursor or FeedCursor(len(limits))
    cursor.more = False
    out: list[asyncpg.Record] = []
    for priority, limit in enumerate(limits):
        if limit <= 0:
            continue
        tenants, whole = await waiting_tenants(conn, priority, cursor.after[priority], limit)
        if not tenants:
            continue
        cursor.after[priority] = tenants[-1]
        cursor.more = cursor.more or not whole
        # Twice a fair share per tenant (so a round still fills when some have less), times
        # its weight, never more than the round: at most ~2x its limit (times the mean weight)
        # in rows locked; those not kept are released at commit.
        per_tenant = min(limit, -(-2 * limit // len(tenants)))
        weights = await tenant_weights(conn, tenants)
        rows = await conn.fetch(_TAKE_DUE_FAIR, priority, tenants, per_tenant, limit, weights)
        out.extend(_in_turns(rows, tenants, weights))  # the stream interleaves tenants
    return out


def _earliest_due(pushed_too: bool) -> str:
    """The earliest due time of the waiting jobs of a priority ``p.priority`` (unpushed ones
    only unless ``pushed_too``): the earliest of each tenant with such jobs (skip scan), one
    probe each, on jobs_waiting_due. Each step is ORDER BY ... LIMIT 1, not min(): with the
    pushed filter on the heap, min() was planned as a bitmap scan of the whole priority."""
    unpushed = "" if pushed_too else " AND q.pushed_at IS NULL"
    return f"""
WITH RECURSIVE waiting AS (
    SELECT (SELECT q.tenant_id FROM queue.jobs q
             WHERE q.priority = p.priority AND q.state IN ('queued', 'deferred'){unpushed}
             ORDER BY q.tenant_id LIMIT 1) AS tenant_id
    UNION ALL
    SELECT (SELECT q.tenant_id FROM queue.jobs q
             WHERE q.priority = p.priority AND q.state IN ('queued', 'deferred'){unpushed}
               AND q.tenant_id > w.tenant_id
             ORDER BY q.tenant_id LIMIT 1)
      FROM waiting w WHERE w.tenant_id IS NOT NULL
)
SELECT min(x.due) FROM waiting w CROSS JOIN LATERAL (
    SELECT q.next_attempt_at AS due FROM queue.jobs q
     WHERE q.priority = p.priority AND q.tenant_id = w.tenant_id
       AND q.state IN ('queued', 'deferred'){unpushed}
     ORDER BY q.next_attempt_at LIMIT 1) x
"""


EARLIEST_UNPUSHED = _earliest_due(pushed_too=False)
#: The same over every waiting job, pushed to a stream or not.
EARLIEST_WAITING = _earliest_due(pushed_too=True)


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    """Seconds until the next unpushed job becomes due (None when there is none)."""
    value = await pool.fetchval(
        "SELECT extract(epoch FROM min(e.due) - now()) FROM"
        " (VALUES (0::smallint), (1::smallint), (2::smallint)) AS p(priority)"
        f" CROSS JOIN LATERAL ({EARLIEST_UNPUSHED}) AS e(due)"
    )
    return None if value is None else max(0.0, float(value))


async def repush_stale(pool: asyncpg.Pool, older_than_s: float) -> int:
    """Jobs pushed long ago but still waiting: Redis lost them; let the feeder push again."""
    # A job is pushed only once due (next_attempt_at <= pushed_at, and every statement that
    # moves its due time clears the mark), so the due time bounds the search to what
    # jobs_waiting_due holds that long: no index names pushed_at (migration 150).
    res: str = await pool.execute(
        "UPDATE queue.jobs SET pushed_at = NULL WHERE state IN ('queued', 'deferred')"
        " AND next_attempt_at < now() - make_interval(secs => $1)"
        " AND pushed_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return int(res.split()[-1])


async def reset_pushed(pool: asyncpg.Pool) -> int:
    """Redis was flushed or replaced: every pushed, unsent job must be pushed again."""
    res: str = await pool.execute(
        "UPDATE queue.jobs SET pushed_at = NULL"
        " WHERE state IN ('queued', 'deferred') AND pushed_at IS NOT NULL"
    )
    return int(res.split()[-1])
