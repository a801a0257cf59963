"""Queue tier, operator's view: find jobs ("messages") and summarise what is waiting.

Used by the admin side-port (``GET /v1/messages``, ``GET /v1/queues``) and the gauge collector.
Searches are keyset-paginated on the job id (newest first), so page N costs the same as page 1.
The SQL text is assembled only from fixed fragments; every value is a bind parameter.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import msgspec

from engine.model import Priority
from engine.store.feeding import EARLIEST_WAITING
from engine.store.pool import Conn


class MessageView(msgspec.Struct, frozen=True):
    """One job as an operator sees it (no content: that lives in the content tier)."""

    id: int
    tenant_id: str
    idempotency_key: str
    state: str
    priority: str
    sender: str
    recipient: str
    attempts: int
    campaign_id: str | None
    message_id: str | None
    relay_node: str | None
    last_code: int | None
    last_status: str | None
    last_reply: str | None
    send_at: dt.datetime | None
    next_attempt_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    held_at: dt.datetime | None = None  # held by an operator (engine messages hold)
    cancel_requested_at: dt.datetime | None = None  # cancelled while in flight
    expires_at: dt.datetime | None = None


class TimelineEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One row of ``oltp.events`` about a job, as the timeline shows it (any kind, known or
    not: kinds added later by other writers are shown as they are)."""

    id: int
    kind: str
    at: dt.datetime
    reason: str | None = None
    reply: str | None = None
    data: dict[str, Any] | None = None


class TenantPending(msgspec.Struct, frozen=True):
    """Jobs a tenant has waiting (queued + deferred) or in flight (sending)."""

    tenant_id: str
    queued: int
    deferred: int
    sending: int


_COLUMNS = (
    "id, tenant_id, idempotency_key, state, priority, sender, recipient, attempts, campaign_id,"
    " message_id, relay_node, last_code, last_status, last_reply, send_at, next_attempt_at,"
    " created_at, updated_at, finished_at, held_at, cancel_requested_at, expires_at"
)


def _view(r: asyncpg.Record) -> MessageView:
    return MessageView(
        id=r["id"],
        tenant_id=r["tenant_id"],
        idempotency_key=r["idempotency_key"],
        state=r["state"],
        priority=Priority(r["priority"]).label,
        sender=r["sender"],
        recipient=r["recipient"],
        attempts=r["attempts"],
        campaign_id=r["campaign_id"],
        message_id=r["message_id"],
        relay_node=r["relay_node"],
        last_code=r["last_code"],
        last_status=r["last_status"],
        last_reply=r["last_reply"],
        send_at=r["send_at"],
        next_attempt_at=r["next_attempt_at"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        finished_at=r["finished_at"],
        held_at=r["held_at"],
        cancel_requested_at=r["cancel_requested_at"],
        expires_at=r["expires_at"],
    )


def normalise_message_id(value: str) -> str:
    """Message-IDs are stored with angle brackets; accept them with or without."""
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _within(cond: str) -> str:
    """``cond``, plus the id span of the rows matching it (two probes of its own index).

    For "newest first, LIMIT n" the planner prefers walking the id index backwards and
    filtering, assuming matching rows are spread evenly; for an old campaign that walk reads
    every newer job first. Bounded to the campaign's (or sender's) first and last id, it reads
    only that span.
    """
    return (
        f"{cond} AND id BETWEEN (SELECT min(id) FROM queue.jobs WHERE {cond})"
        f" AND (SELECT max(id) FROM queue.jobs WHERE {cond})"
    )


async def search(
    pool: asyncpg.Pool | Conn,
    *,
    tenant_id: str | None = None,
    recipient: str | None = None,
    message_id: str | None = None,
    state: str | None = None,
    campaign_id: str | None = None,
    sender: str | None = None,
    priority: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[MessageView]:
    """Jobs matching every given filter, newest first; ``before_id`` is the keyset cursor.

    Only the filters given become SQL conditions (a fixed ``$n IS NULL OR ...`` form would let
    PostgreSQL's generic plan ignore the indexes). Each selective filter has an index that
    serves the id order: tenant (primary key), recipient (``(tenant_id, recipient)``), campaign
    (``jobs_campaign``), sender (``jobs_sender``), Message-ID; a time range becomes an id range
    (:func:`_first_id_at`). Addresses match as stored or lower-cased.
    """
    conds: list[str] = []
    args: list[object] = []

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if tenant_id is not None:
        conds.append(f"tenant_id = {bind(tenant_id)}")
    if recipient is not None:
        conds.append(f"recipient = ANY({bind(sorted({recipient, recipient.lower()}))}::text[])")
    if message_id is not None:
        conds.append(f"message_id = {bind(normalise_message_id(message_id))}")
    if state is not None:
        conds.append(f"state = {bind(state)}")
    if campaign_id is not None:
        conds.append(_within(f"campaign_id = {bind(campaign_id)}"))
    if sender is not None:
        conds.append(_within(f"sender = ANY({bind(sorted({sender, sender.lower()}))}::text[])"))
    if priority is not None:
        conds.append(f"priority = {bind(priority)}::smallint")
    if since is not None:
        conds.append(f"created_at >= {bind(since)}")
        low = await _first_id_at(pool, since - _SKEW)
        conds.append(f"id >= {bind(low)}")
    if until is not None:
        conds.append(f"created_at < {bind(until)}")
        high = await _first_id_at(pool, until + _SKEW)
        conds.append(f"id < {bind(high)}")
    if before_id is not None:
        conds.append(f"id < {bind(before_id)}")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    # The limit is written into the text (an int): as a parameter, the planner assumes a large
    # share of the rows and may sort every job of a campaign instead of walking its index.
    sql = f"SELECT {_COLUMNS} FROM queue.jobs{where} ORDER BY id DESC LIMIT {int(limit)}"
    return [_view(r) for r in await pool.fetch(sql, *args)]


# Ids come from an identity column in insertion order, and created_at is the inserting
# transaction's start: the two agree up to the length of an enqueue transaction. A time range
# becomes an id range (found by bisection on the primary key, widened by this much), and the
# created_at condition then applies exactly within it.
_SKEW = dt.timedelta(minutes=5)
_PROBE = "SELECT id, created_at FROM queue.jobs WHERE id >= $1 ORDER BY id LIMIT 1"


async def _first_id_at(pool: asyncpg.Pool | Conn, at: dt.datetime) -> int:
    """The smallest job id created at or after ``at`` (one past the last id when none): about
    log2(jobs) probes of the id index, instead of an index on created_at that every job update
    would have to maintain."""
    bounds = await pool.fetchrow("SELECT min(id) AS lo, max(id) AS hi FROM queue.jobs")
    if bounds is None or bounds["lo"] is None:
        return 1
    lo, hi = int(bounds["lo"]), int(bounds["hi"]) + 1  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        row = await pool.fetchrow(_PROBE, mid)
        if row is None or row["created_at"] >= at:
            hi = mid
        else:
            lo = int(row["id"]) + 1
    return lo


async def timeline(pool: asyncpg.Pool | Conn, job_id: int, tenant_id: str) -> list[TimelineEvent]:
    """Every event recorded about one job, oldest first (``events_job`` index)."""
    rows = await pool.fetch(
        "SELECT id, kind, created_at, reason, reply, data::text AS data FROM oltp.events"
        " WHERE job_id = $1 AND tenant_id = $2 ORDER BY created_at, id",
        job_id,
        tenant_id,
    )
    return [
        TimelineEvent(
            id=r["id"],
            kind=r["kind"],
            at=r["created_at"],
            reason=r["reason"],
            reply=r["reply"],
            data=_data(r["data"]),
        )
        for r in rows
    ]


def _data(text: str | None) -> dict[str, Any] | None:
    """An event's ``data`` as an object (any other JSON value is wrapped, never dropped)."""
    if text is None:
        return None
    value = msgspec.json.decode(text)
    return value if isinstance(value, dict) else {"data": value}


async def get(
    pool: asyncpg.Pool | Conn, job_id: int, tenant_id: str | None = None
) -> MessageView | None:
    """One job by id (and tenant, when given)."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM queue.jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        job_id,
        tenant_id,
    )
    return None if row is None else _view(row)


async def pending_by_tenant(pool: asyncpg.Pool, limit: int = 50) -> list[TenantPending]:
    """The tenants with the most jobs waiting or in flight (busiest first, at most ``limit``)."""
    rows = await pool.fetch(
        "SELECT tenant_id,"
        " count(*) FILTER (WHERE state = 'queued') AS queued,"
        " count(*) FILTER (WHERE state = 'deferred') AS deferred,"
        " count(*) FILTER (WHERE state = 'sending') AS sending"
        " FROM queue.jobs WHERE state IN ('queued', 'deferred', 'sending')"
        " GROUP BY tenant_id ORDER BY count(*) DESC, tenant_id LIMIT $1",
        limit,
    )
    return [TenantPending(r["tenant_id"], r["queued"], r["deferred"], r["sending"]) for r in rows]


# Per priority, the oldest due time among waiting jobs, pushed to a stream or not (a pushed job
# has waited since it became due): the earliest of each tenant with waiting jobs, a probe per
# such tenant on jobs_waiting_due. No table scan; held jobs are due in 9999 and do not count.
_OLDEST = f"""
SELECT p.priority, coalesce(extract(epoch FROM now() - (
    SELECT CASE WHEN e.due <= now() THEN e.due END FROM ({EARLIEST_WAITING}) AS e(due)
)), 0)::float8 AS age
FROM (VALUES (0::smallint), (1::smallint), (2::smallint)) AS p(priority)
"""


async def oldest_due_age_s(pool: asyncpg.Pool) -> dict[str, float]:
    """Seconds the oldest due, unrelayed job of each priority has waited (0 when none)."""
    rows = await pool.fetch(_OLDEST)
    out = {p.label: 0.0 for p in Priority}
    for r in rows:
        out[Priority(r["priority"]).label] = max(0.0, float(r["age"]))
    return out


async def content_key(pool: asyncpg.Pool, job_id: int, tenant_id: str) -> bytes | None:
    """The content-tier key (SHA-256) of a job's message."""
    value = await pool.fetchval(
        "SELECT content_sha256 FROM queue.jobs WHERE id = $1 AND tenant_id = $2", job_id, tenant_id
    )
    return None if value is None else bytes(value)
