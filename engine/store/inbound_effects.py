"""The statements the inbound effects run in their batch transaction: find the jobs a batch of
reports names, set their states, record events, count soft bounces, mark messages processed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from engine.store.pool import Conn

_JOB_COLUMNS = (
    "id, tenant_id, sender, recipient, message_id, relay_node,"
    " extract(epoch FROM created_at)::float8 AS created, campaign_id, provider,"
    " extract(epoch FROM relayed_at)::float8 AS relayed, state = 'sending' AS sending"
)
_J_COLUMNS = (
    "j.id, j.tenant_id, j.sender, j.recipient, j.message_id, j.relay_node, j.created,"
    " j.campaign_id, j.provider, j.relayed, j.sending"
)


async def jobs_named(
    conn: Conn,
    ids: Sequence[int],
    message_ids: Sequence[str],
    signed: Sequence[tuple[str, str]],
) -> list[asyncpg.Record]:
    """Jobs by id; by Message-ID at most two each; and every job of a (Message-ID, lower-cased
    recipient) pair. Columns: id, tenant_id, sender, recipient, message_id, relay_node, created
    (enqueued at, Unix seconds), campaign_id, provider, relayed (first relayed, Unix seconds),
    sending (claimed, its relay outcome not written yet)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_JOB_COLUMNS} FROM queue.jobs"
        " WHERE id = ANY($1::bigint[])"
        f" UNION SELECT {_J_COLUMNS} FROM unnest($2::text[]) AS m(mid) CROSS JOIN LATERAL"
        f" (SELECT {_JOB_COLUMNS} FROM queue.jobs"
        "  WHERE message_id = m.mid LIMIT 2) j"
        f" UNION SELECT {_J_COLUMNS} FROM unnest($3::text[], $4::text[]) AS p(mid, rcpt)"
        f" CROSS JOIN LATERAL (SELECT {_JOB_COLUMNS} FROM queue.jobs q"
        "  WHERE q.message_id = p.mid AND lower(q.recipient) = p.rcpt) j",
        list(ids),
        list(message_ids),
        [p[0] for p in signed],
        [p[1] for p in signed],
    )
    return rows


async def job_by_id(conn: Conn, job_id: int) -> asyncpg.Record | None:
    """One job, with the columns of :func:`jobs_named`."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM queue.jobs WHERE id = $1", job_id
    )
    return row


async def set_job_states(conn: Conn, states: dict[int, str]) -> None:
    """Final states from reports; a cancelled job stays so, a complaint is not undone by a
    later bounce."""
    ids = list(states)
    await conn.execute(
        "UPDATE queue.jobs j SET state = u.st, updated_at = now(),"
        " finished_at = coalesce(j.finished_at, now())"
        " FROM unnest($1::bigint[], $2::text[]) AS u(id, st)"
        " WHERE j.id = u.id AND j.state <> 'cancelled'"
        " AND NOT (j.state = 'complained' AND u.st = 'bounced')",
        ids,
        [states[i] for i in ids],
    )


async def insert_events(
    conn: Conn, rows: Sequence[tuple[Any, ...]], data: Sequence[str | None]
) -> None:
    """Rows of (tenant, job, kind, recipient, message id, reason, reply), with ``data`` (JSON
    text or None) one per row."""
    await conn.execute(
        "INSERT INTO oltp.events"
        " (tenant_id, job_id, kind, recipient, message_id, reason, reply, data)"
        " SELECT t, j, k, r, m, re, rp, d::jsonb FROM unnest($1::text[], $2::bigint[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
        " AS u(t, j, k, r, m, re, rp, d)",
        *[[r[i] for r in rows] for i in range(7)],
        list(data),
    )


async def soft_bounced_over(
    conn: Conn, pairs: Sequence[tuple[str, str]], window_days: int, limit: int
) -> list[tuple[str, str]]:
    """(tenant, address) pairs whose soft bounces in the window reached ``limit``."""
    rows = await conn.fetch(
        "SELECT e.tenant_id, e.recipient FROM oltp.events e"
        " JOIN unnest($1::text[], $2::text[]) AS u(t, a)"
        " ON e.tenant_id = u.t AND lower(e.recipient) = lower(u.a)"
        " WHERE e.kind = 'soft_bounced'"
        " AND e.created_at > now() - make_interval(days => $3)"
        # Distinct jobs: a job's soft bounce counts once however often it is replayed.
        " GROUP BY e.tenant_id, e.recipient HAVING count(DISTINCT e.job_id) >= $4",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        window_days,
        limit,
    )
    return [(r["tenant_id"], r["recipient"]) for r in rows]


async def mark_processed(
    conn: Conn | asyncpg.Pool,
    processed: Sequence[tuple[int, int | None, str | None, str]],
    details: Sequence[tuple[str | None, str | None, str | None, str | None]] | None = None,
) -> None:
    """(inbound id, job id, tenant, kind) of each message the batch handled, with its parsed
    (status, diagnostic, remote MTA, reason) when known, kept beside the raw message."""
    none = (None, None, None, None)
    found = list(details) if details is not None else [none] * len(processed)
    await conn.execute(
        "UPDATE content.inbound_messages m SET processed_at = now(), job_id = u.job,"
        " tenant_id = coalesce(u.t, ''), kind = u.k, dsn_status = u.st, dsn_diagnostic = u.diag,"
        " remote_mta = u.mta, reason = u.why"
        " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::text[], $8::text[]) AS u(id, job, t, k, st, diag, mta, why)"
        " WHERE m.id = u.id",
        [p[0] for p in processed],
        [p[1] for p in processed],
        [p[2] for p in processed],
        [p[3] for p in processed],
        [d[0] for d in found],
        [d[1] for d in found],
        [d[2] for d in found],
        [d[3] for d in found],
    )


async def jobs_by_id(conn: Conn, job_ids: Sequence[int]) -> list[dict[str, Any]]:
    """id, tenant_id, sender, recipient, message_id, campaign_id, provider ('' when none) and
    relayed_at of these jobs (unknown ids left out)."""
    rows = await conn.fetch(
        "SELECT id, tenant_id, sender, recipient, message_id, campaign_id,"
        " coalesce(provider, '') AS provider, relayed_at FROM queue.jobs"
        " WHERE id = ANY($1::bigint[])",
        list(job_ids),
    )
    return [dict(r) for r in rows]
