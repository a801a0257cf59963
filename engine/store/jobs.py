"""Queue tier: the ``queue.jobs`` table, the truth for "was this sent?".

Every function here is one round trip for a whole batch (unnest arrays), never one per job.
The claim/outcome pair implements at-least-once delivery: a worker claims jobs by moving them to
``sending`` under a lease; its outcome is written only while it still holds that lease, so a job
whose worker died is claimed again after the lease (the in-flight window is the only source of
duplicates).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from engine.model import JobState
from engine.store.pool import Conn


class NewJob(msgspec.Struct, frozen=True):
    tenant_id: str
    idempotency_key: str
    priority: int
    sender: str
    recipient: str
    content_sha256: bytes
    campaign_id: str | None
    metadata: dict[str, Any] | None
    send_at: dt.datetime | None
    template_version: int | None = None  # a templated job: the campaign version it renders
    variables: dict[str, Any] | None = None


class Inserted(msgspec.Struct, frozen=True):
    tenant_id: str
    idempotency_key: str
    job_id: int
    created: bool  # False: the idempotency key was already there


class ClaimedJob(msgspec.Struct, frozen=True):
    id: int
    tenant_id: str
    priority: int
    attempts: int
    sender: str
    recipient: str
    content_sha256: bytes
    campaign_id: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    template_version: int | None = None
    variables: dict[str, Any] | None = None


class OutcomeRow(msgspec.Struct, frozen=True):
    """A job's new state after an attempt (or a hold), as the outcome writer stores it."""

    job_id: int
    attempts: int  # the attempt number this outcome belongs to (lease guard)
    state: str
    next_attempt_in_s: float | None = None  # for queued/deferred
    undo_attempt: bool = False  # a hold (shaping, paused sender) was not a real attempt
    code: int | None = None
    status: str | None = None
    reply: str | None = None
    node: str | None = None
    message_id: str | None = None
    selector: str | None = None  # the DKIM selector(s) the message was signed with
    relay_ms: float | None = None  # time the relay attempt took
    tenant_id: str | None = None  # the job's tenant (its key with job_id); looked up when None


_FINAL = [
    s.value
    for s in (
        JobState.RELAYED,
        JobState.BOUNCED,
        JobState.FAILED,
        JobState.SUPPRESSED,
        JobState.CANCELLED,
        JobState.COMPLAINED,
    )
]


async def insert(conn: Conn, jobs: Sequence[NewJob], *, max_age_s: float) -> list[Inserted]:
    """Insert jobs idempotently on (tenant_id, idempotency_key); two statements per batch."""
    if not jobs:
        return []
    rows = await conn.fetch(
        """
        INSERT INTO queue.jobs AS q (tenant_id, idempotency_key, priority, sender, recipient,
            content_sha256, campaign_id, metadata, send_at, next_attempt_at, expires_at,
            template_version, variables)
        SELECT t, k, p, s, r, h, c, m, sa, coalesce(sa, now()),
               greatest(coalesce(sa, now()), now()) + make_interval(secs => $10), tv, v
        FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[], $5::text[], $6::bytea[],
                    $7::text[], $8::jsonb[], $9::timestamptz[], $11::int[], $12::jsonb[])
             AS u(t, k, p, s, r, h, c, m, sa, tv, v)
        ON CONFLICT ON CONSTRAINT jobs_tenant_id_idempotency_key_key DO NOTHING
        RETURNING q.tenant_id, q.idempotency_key, q.id
        """,
        [j.tenant_id for j in jobs],
        [j.idempotency_key for j in jobs],
        [j.priority for j in jobs],
        [j.sender for j in jobs],
        [j.recipient for j in jobs],
        [j.content_sha256 for j in jobs],
        [j.campaign_id for j in jobs],
        [j.metadata for j in jobs],
        [j.send_at for j in jobs],
        max_age_s,
        [j.template_version for j in jobs],
        [j.variables for j in jobs],
    )
    created = {(r["tenant_id"], r["idempotency_key"]): r["id"] for r in rows}
    missing = [
        (j.tenant_id, j.idempotency_key)
        for j in jobs
        if (j.tenant_id, j.idempotency_key) not in created
    ]
    existing: dict[tuple[str, str], int] = {}
    if missing:
        found = await conn.fetch(
            "SELECT q.tenant_id, q.idempotency_key, q.id FROM queue.jobs q"
            " JOIN unnest($1::text[], $2::text[]) AS u(t, k)"
            " ON q.tenant_id = u.t AND q.idempotency_key = u.k",
            [m[0] for m in missing],
            [m[1] for m in missing],
        )
        existing = {(r["tenant_id"], r["idempotency_key"]): r["id"] for r in found}
    out = []
    for j in jobs:
        key = (j.tenant_id, j.idempotency_key)
        if key in created:
            out.append(Inserted(j.tenant_id, j.idempotency_key, created[key], True))
        else:
            out.append(Inserted(j.tenant_id, j.idempotency_key, existing[key], False))
    return out


#: A held job's next_attempt_at (migration 100): later than any due-time scan looks, finite so
#: every date arithmetic on it still works (PostgreSQL refuses ``'infinity' - now()``).
HELD_UNTIL = "'9999-01-01 00:00:00+00'::timestamptz"

_CLAIM = """
UPDATE queue.jobs j
   SET state = 'sending', attempts = j.attempts + 1, lease_owner = $2,
       lease_until = now() + make_interval(secs => $3), updated_at = now()
  FROM unnest($4::text[], $1::bigint[]) AS k(tenant_id, id)
 WHERE j.tenant_id = k.tenant_id AND j.id = k.id
   AND ((j.state IN ('queued', 'deferred') AND j.next_attempt_at <= now() + interval '1 second')
        OR (j.state = 'sending' AND j.lease_until < now()
            AND j.held_at IS NULL AND j.cancel_requested_at IS NULL))
RETURNING j.id, j.tenant_id, j.priority, j.attempts, j.sender, j.recipient, j.content_sha256,
          j.campaign_id, j.created_at, j.expires_at, j.template_version, j.variables
"""


# Each job is found by its primary key (tenant_id, id): one probe of jobs_pkey per job whatever
# the statistics say, and the key a distributed queue.jobs routes on (docs/scaling.md).


async def tenants_of(db: asyncpg.Pool | Conn, ids: Sequence[int]) -> list[str | None]:
    """The tenant of each job of ``ids`` (None for an unknown id), for callers that hold only
    job ids: one lookup through the index on id."""
    rows = await db.fetch(
        "SELECT id, tenant_id FROM queue.jobs WHERE id = ANY($1::bigint[])", list(ids)
    )
    found = {r["id"]: r["tenant_id"] for r in rows}
    return [found.get(i) for i in ids]


async def claim(
    pool: asyncpg.Pool,
    ids: Sequence[int],
    *,
    owner: str,
    lease_s: float,
    tenants: Sequence[str] | None = None,
) -> list[ClaimedJob]:
    """Take the jobs that are still due (stale stream entries are simply not returned).

    ``tenants``: the tenant of each of ``ids`` (the stream entries carry it); looked up first
    when not given."""
    if not ids:
        return []
    owners = list(tenants) if tenants is not None else await tenants_of(pool, ids)
    rows = await pool.fetch(_CLAIM, list(ids), owner, lease_s, owners)
    return [
        ClaimedJob(
            r["id"],
            r["tenant_id"],
            r["priority"],
            r["attempts"],
            r["sender"],
            r["recipient"],
            bytes(r["content_sha256"]),
            r["campaign_id"],
            r["created_at"],
            r["expires_at"],
            r["template_version"],
            r["variables"],
        )
        for r in rows
    ]


_OUTCOMES = """
UPDATE queue.jobs j
   SET state = CASE WHEN u.st IN ('queued', 'deferred') AND j.cancel_requested_at IS NOT NULL
                    THEN 'cancelled'
                    WHEN u.st IN ('queued', 'deferred') AND j.expires_at < now()
                    THEN 'failed' ELSE u.st END,
       attempts = j.attempts - u.undo::int,
       next_attempt_at = CASE WHEN j.held_at IS NOT NULL AND u.st IN ('queued', 'deferred')
                              THEN {held}
                              WHEN u.delay IS NULL THEN j.next_attempt_at
                              ELSE now() + make_interval(secs => u.delay) END,
       pushed_at = NULL, lease_owner = NULL, lease_until = NULL,
       relay_node = coalesce(u.node, j.relay_node),
       last_code = coalesce(u.code, j.last_code),
       last_status = coalesce(u.status, j.last_status),
       last_reply = CASE WHEN u.st IN ('queued', 'deferred') AND j.expires_at < now()
                         THEN 'expired: not relayed within the maximum age; last: '
                              || coalesce(u.reply, j.last_reply, '')
                         ELSE coalesce(u.reply, j.last_reply) END,
       message_id = coalesce(u.mid, j.message_id),
       provider = coalesce(nullif(u.prov, ''), j.provider),
       relayed_at = CASE WHEN u.st = 'relayed' THEN coalesce(j.relayed_at, now())
                         ELSE j.relayed_at END,
       updated_at = now(),
       finished_at = CASE WHEN u.st = ANY($12::text[])
                            OR (u.st IN ('queued', 'deferred')
                                AND (j.expires_at < now() OR j.cancel_requested_at IS NOT NULL))
                          THEN now() END
  FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::bool[], $6::int[],
              $7::text[], $8::text[], $9::text[], $10::text[], $13::text[], $14::text[])
       AS u(id, att, st, delay, undo, code, status, reply, node, mid, tenant_id, prov)
 WHERE j.tenant_id = u.tenant_id AND j.id = u.id
   AND j.state = 'sending' AND j.lease_owner = $11 AND j.attempts = u.att
RETURNING j.id, j.tenant_id, j.sender, j.state
""".replace("{held}", HELD_UNTIL)
# The plan this needs: for each row of u, one probe of jobs_pkey (tenant_id, id). A unique index
# fully matched makes the planner pick it even when statistics are stale (minutes after a
# campaign was enqueued): otherwise it can walk every 'sending' row of jobs_leased, dead entries
# included, once per row of u.


async def write_outcomes(
    conn: Conn,
    owner: str,
    rows: Sequence[OutcomeRow],
    providers: Sequence[str | None] | None = None,
) -> list[asyncpg.Record]:
    """Store outcomes of jobs this owner still holds; returns the rows actually updated.

    ``providers`` (one per row, '' or None for none) is the provider each job was shaped
    for, kept on the job so that its bounces and complaints count under it.

    A job whose lease was lost (another worker re-claimed it) is skipped: that worker's outcome
    is the one that counts.
    """
    if not rows:
        return []
    result: list[asyncpg.Record] = await conn.fetch(
        _OUTCOMES,
        [r.job_id for r in rows],
        [r.attempts for r in rows],
        [r.state for r in rows],
        [r.next_attempt_in_s for r in rows],
        [r.undo_attempt for r in rows],
        [r.code for r in rows],
        [r.status for r in rows],
        [r.reply for r in rows],
        [r.node for r in rows],
        [r.message_id for r in rows],
        owner,
        _FINAL,
        await _tenants(conn, rows),
        list(providers) if providers is not None else [None] * len(rows),
    )
    return result


async def _tenants(conn: Conn, rows: Sequence[OutcomeRow]) -> list[str | None]:
    """The tenant of each outcome row: its own, else looked up (one query for the missing)."""
    missing = [r.job_id for r in rows if r.tenant_id is None]
    found = dict(zip(missing, await tenants_of(conn, missing), strict=True)) if missing else {}
    return [r.tenant_id if r.tenant_id is not None else found[r.job_id] for r in rows]


async def release_leases(
    pool: asyncpg.Pool, owners: Sequence[str] | None = None, *, keep: Sequence[int] = ()
) -> int:
    """Give jobs held by dead owners (or with expired leases) back to the queue.

    Such a job may have reached the relay before its owner died: it will be sent again (the
    in-flight window); its Message-ID is fixed so the receiver can recognise the retry. ``keep``
    names jobs of ``owners`` that stay leased: a live owner releasing the claims it lost track
    of (a claim whose reply a broken connection swallowed) keeps the ones it is still sending.
    """
    if owners is not None:
        # lease_until IS NOT NULL (always true while sending) lets this use jobs_leased.
        cond = "lease_until IS NOT NULL AND lease_owner = ANY($1::text[])"
        cond += " AND NOT (id = ANY($2::bigint[]))"
        args: list[object] = [list(owners), list(keep)]
    else:
        cond, args = "lease_until < now()", []
    res: str = await pool.execute(
        # A job a bulk action reached while in flight: cancelled or held, not retried.
        "UPDATE queue.jobs SET pushed_at = NULL, lease_owner = NULL, lease_until = NULL,"
        " state = CASE WHEN cancel_requested_at IS NULL THEN 'deferred' ELSE 'cancelled' END,"
        " finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,"
        f" next_attempt_at = CASE WHEN held_at IS NULL THEN now() ELSE {HELD_UNTIL} END,"
        " updated_at = now()"
        f" WHERE state = 'sending' AND {cond}",
        *args,
    )
    return int(res.split()[-1])


async def unpush(pool: asyncpg.Pool, ids: Sequence[int]) -> int:
    """Jobs whose stream entries were dropped unread: let the feeder push them again now."""
    if not ids:
        return 0
    res: str = await pool.execute(
        "UPDATE queue.jobs SET pushed_at = NULL WHERE id = ANY($1::bigint[])"
        " AND state IN ('queued', 'deferred') AND pushed_at IS NOT NULL",
        list(ids),
    )
    return int(res.split()[-1])


async def expire_old(pool: asyncpg.Pool) -> int:
    """Fail queued/deferred jobs past their maximum age."""
    res: str = await pool.execute(
        "UPDATE queue.jobs SET state = 'failed', finished_at = now(), updated_at = now(),"
        " last_reply = 'expired: not relayed within the maximum age; last: '"
        " || coalesce(last_reply, 'never attempted')"
        " WHERE state IN ('queued', 'deferred') AND expires_at < now()"
    )
    return int(res.split()[-1])


async def counts(pool: asyncpg.Pool, tenant_id: str | None = None) -> dict[str, int]:
    """Job counts per state (every state present, zero when none)."""
    rows = await pool.fetch(
        "SELECT state, count(*) AS n FROM queue.jobs"
        " WHERE ($1::text IS NULL OR tenant_id = $1) GROUP BY state",
        tenant_id,
    )
    out = {s.value: 0 for s in JobState}
    out.update({r["state"]: r["n"] for r in rows})
    return out


async def cancel(
    pool: asyncpg.Pool | Conn, job_id: int, tenant_id: str | None = None
) -> str | None:
    """Cancel a job not yet relayed; returns its state after the call (None: no such job)."""
    row = await pool.fetchrow(
        "UPDATE queue.jobs SET state = 'cancelled', finished_at = now(), updated_at = now()"
        " WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        " AND state IN ('queued', 'deferred') RETURNING state",
        job_id,
        tenant_id,
    )
    if row:
        return str(row["state"])
    state = await pool.fetchval(
        "SELECT state FROM queue.jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        job_id,
        tenant_id,
    )
    return None if state is None else str(state)


async def drain_enqueue_tally(pool: asyncpg.Pool, limit: int = 10_000) -> int:
    """Delete up to ``limit`` rows of ``queue.enqueue_tally`` (committed enqueues, migration
    105) and return the jobs they count. A row is deleted, hence counted, by one caller only:
    concurrent drains from several instances skip each other's rows (SKIP LOCKED)."""
    n = await pool.fetchval(
        """
        WITH gone AS (
            DELETE FROM queue.enqueue_tally WHERE (tenant_id, id) IN (
                SELECT tenant_id, id FROM queue.enqueue_tally
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
            )
            RETURNING jobs
        )
        SELECT coalesce(sum(jobs), 0)::bigint FROM gone
        """,
        limit,
    )
    return int(n)
