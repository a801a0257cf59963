"""``oltp.events``: the durable event log; batched writes and commit-ordered reads.

:func:`write` is one INSERT (unnest) meant to run inside the caller's transaction, so a job's
new state and its event commit together. Readers (the stream publisher, the webhook worker)
tail the table by :class:`Position` — the writing transaction's xid, then the row id — and only
below ``oltp.events_horizon()``: a transaction that took a lower id but commits later can never
land behind a reader's cursor (migration 050 explains why plain ids are not enough).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
import orjson

from engine.events.model import Event, check_kinds
from engine.store.pool import Conn

#: Reads work on a connection or straight on the pool (one statement each).
Reader = Conn | asyncpg.Pool


class Position(msgspec.Struct, frozen=True, order=True, array_like=True):
    """Where a reader stands in ``oltp.events``: (writing transaction's xid, row id)."""

    xid: int
    id: int


START = Position(0, 0)

_INSERT = """
INSERT INTO oltp.events
    (tenant_id, job_id, kind, recipient, message_id, reason, reply, data, created_at)
SELECT u.t, u.j, u.k, u.r, u.m, u.re, u.rp, u.d::jsonb, coalesce(u.c, now())
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::timestamptz[]) AS u(t, j, k, r, m, re, rp, d, c)
"""

# ``data::text`` so decoding does not depend on the connection's jsonb codec. The job's
# campaign, idempotency key and metadata come from one primary-key probe per event of the page
# (readers only: the writers on the send path insert nothing more).
_COLUMNS = (
    "e.x, e.id, e.tenant_id, e.job_id, e.kind, e.recipient, e.message_id, e.reason, e.reply,"
    " e.data, e.created_at, j.campaign_id, j.idempotency_key, j.metadata::text AS metadata"
)
_PAGE_COLUMNS = (
    "xid, xid::text::bigint AS x, id, tenant_id, job_id, kind, recipient, message_id, reason,"
    " reply, data::text AS data, created_at"
)
# LATERAL with LIMIT 1 keeps the plan a primary-key probe per event: as a plain join the planner
# may hash the whole of queue.jobs for one page.
_JOIN = (
    "LEFT JOIN LATERAL (SELECT q.campaign_id, q.idempotency_key, q.metadata FROM queue.jobs q"
    " WHERE q.tenant_id = e.tenant_id AND q.id = e.job_id LIMIT 1) j ON true"
)

_TAIL = f"""
SELECT {_COLUMNS} FROM (
    SELECT {_PAGE_COLUMNS} FROM oltp.events
     WHERE xid IS NOT NULL AND (xid, id) > ($1::text::xid8, $2::bigint)
       AND xid < (SELECT oltp.events_horizon())
     ORDER BY xid, id LIMIT $3) e
{_JOIN}
 ORDER BY e.xid, e.id
"""

_TENANT_TAIL = f"""
SELECT {_COLUMNS} FROM (
    SELECT {_PAGE_COLUMNS} FROM oltp.events
     WHERE tenant_id = $1 AND xid IS NOT NULL AND (xid, id) > ($2::text::xid8, $3::bigint)
       AND xid < (SELECT oltp.events_horizon())
     ORDER BY xid, id LIMIT $4) e
{_JOIN}
 ORDER BY e.xid, e.id
"""

# Which tenants have new events (webhook worker): one row, the distinct tenants of the page and
# its last position, so the worker decodes a few tenant names instead of a row per event.
_TENANTS_AFTER = """
WITH page AS (
    SELECT tenant_id, xid, id FROM oltp.events
     WHERE xid IS NOT NULL AND (xid, id) > ($1::text::xid8, $2::bigint)
       AND xid < (SELECT oltp.events_horizon())
     ORDER BY xid, id LIMIT $3)
SELECT (SELECT array_agg(DISTINCT tenant_id) FROM page) AS tenants, l.x, l.id
  FROM (SELECT xid::text::bigint AS x, id FROM page ORDER BY xid DESC, id DESC LIMIT 1) l
"""

# Whether any row lies after a position, settled or not: one probe of events_tail, no horizon.
_ANY_AFTER = """
SELECT EXISTS (SELECT 1 FROM oltp.events
                WHERE xid IS NOT NULL AND (xid, id) > ($1::text::xid8, $2::bigint))
"""

_HEAD = """
SELECT xid::text::bigint AS x, id FROM oltp.events
 WHERE xid IS NOT NULL AND xid < (SELECT oltp.events_horizon())
 ORDER BY xid DESC, id DESC LIMIT 1
"""


async def write(conn: Conn, events: Sequence[Event]) -> int:
    """Insert ``events`` in one statement (inside the caller's transaction); returns the count.

    Raises :class:`~engine.errors.EventError` on an unknown kind before writing anything.
    """
    if not events:
        return 0
    check_kinds(events)
    await conn.execute(
        _INSERT,
        [e.tenant_id for e in events],
        [e.job_id for e in events],
        [e.kind for e in events],
        [e.recipient for e in events],
        [e.message_id for e in events],
        [e.reason for e in events],
        [e.reply for e in events],
        [None if e.data is None else orjson.dumps(e.data).decode() for e in events],
        [e.at for e in events],
    )
    return len(events)


def _event(row: Any) -> tuple[Position, Event]:
    # Unpacked by position (the order of _COLUMNS): this runs for every event the publisher
    # and the webhook worker read, on the loop thread.
    x, id_, tenant, job, kind, recipient, mid, reason, reply, data, at, camp, idem, meta = row
    return Position(x, id_), Event(
        tenant_id=tenant,
        kind=kind,
        job_id=job,
        message_id=mid,
        recipient=recipient,
        reason=reason,
        reply=reply,
        at=at if at.tzinfo is dt.UTC else at.astimezone(dt.UTC),
        data=None if data is None else orjson.loads(data),
        id=id_,
        campaign_id=camp,
        idempotency_key=idem,
        metadata=None if meta is None else orjson.loads(meta),
    )


async def read_after(conn: Reader, after: Position, limit: int) -> list[tuple[Position, Event]]:
    """Up to ``limit`` settled events after ``after``, in commit order, every tenant."""
    rows = await conn.fetch(_TAIL, str(after.xid), after.id, limit)
    return [_event(r) for r in rows]


async def read_tenant_after(
    conn: Reader, tenant_id: str, after: Position, limit: int
) -> list[tuple[Position, Event]]:
    """Up to ``limit`` settled events of one tenant after ``after``, in commit order."""
    rows = await conn.fetch(_TENANT_TAIL, tenant_id, str(after.xid), after.id, limit)
    return [_event(r) for r in rows]


async def tenants_after(
    conn: Reader, after: Position, limit: int
) -> tuple[set[str], Position | None]:
    """Tenants with settled events after ``after`` (scanning at most ``limit``) and the last
    position scanned (None when there was nothing new)."""
    row = await conn.fetchrow(_TENANTS_AFTER, str(after.xid), after.id, limit)
    if row is None:
        return set(), None
    return set(row["tenants"]), Position(row["x"], row["id"])


async def any_after(conn: Reader, after: Position) -> bool:
    """Whether ``oltp.events`` has a committed row after ``after`` (settled or not): the cheap
    test a reader runs before a full read when it last found nothing."""
    return bool(await conn.fetchval(_ANY_AFTER, str(after.xid), after.id))


async def head(conn: Reader) -> Position:
    """The position of the newest settled event (:data:`START` when there is none)."""
    row = await conn.fetchrow(_HEAD)
    return START if row is None else Position(row["x"], row["id"])


async def load_cursor(conn: Conn, name: str) -> Position:
    """A named reader position (``oltp.event_cursors``); :data:`START` when never saved."""
    row = await conn.fetchrow(
        "SELECT xid::text::bigint AS x, id FROM oltp.event_cursors WHERE name = $1", name
    )
    return START if row is None else Position(row["x"], row["id"])


async def save_cursor(conn: Conn, name: str, pos: Position) -> None:
    await conn.execute(
        "INSERT INTO oltp.event_cursors (name, xid, id) VALUES ($1, $2::text::xid8, $3)"
        " ON CONFLICT (name) DO UPDATE SET xid = excluded.xid, id = excluded.id,"
        " updated_at = now()",
        name,
        str(pos.xid),
        pos.id,
    )


async def try_xact_lock(conn: Conn, key: int) -> bool:
    """Take the transaction-level advisory lock ``key`` if free (released at commit)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def try_session_lock(conn: Conn, key: int) -> bool:
    """Take the session-level advisory lock ``key`` if free (released when the session ends)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


# -- webhook endpoints (oltp.webhook_endpoints, oltp.webhook_dead_letters) -----------------------

_VIEW = """
SELECT e.id, e.tenant_id, e.url, e.kinds, e.active, e.description, e.created_at, e.attempts,
       e.failing_since, e.next_attempt_at, e.last_status, e.last_error, e.last_success_at,
       e.delivered,
       (SELECT count(*) FROM oltp.webhook_dead_letters d
         WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id) AS dead_letters
  FROM oltp.webhook_endpoints e
"""


async def insert_endpoint(
    conn: Conn, tenant_id: str, url: str, key: str, kinds: list[str], description: str | None
) -> asyncpg.Record:
    """Add an endpoint; returns its operator view (the columns of :func:`endpoint_rows`)."""
    new_id: int = await conn.fetchval(
        "INSERT INTO oltp.webhook_endpoints (tenant_id, url, secret, kinds, description)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        tenant_id,
        url,
        key,
        kinds,
        description,
    )
    row: asyncpg.Record | None = await conn.fetchrow(_VIEW + " WHERE e.id = $1", new_id)
    assert row is not None  # just inserted, on this connection
    return row


async def endpoint_rows(conn: Reader, tenant_id: str | None) -> list[asyncpg.Record]:
    """Every endpoint (of one tenant when given) as operators see it (no secret), by id."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _VIEW + " WHERE $1::text IS NULL OR e.tenant_id = $1 ORDER BY e.id", tenant_id
    )
    return rows


async def delete_endpoint(
    conn: Conn, endpoint_id: int, tenant_id: str | None
) -> asyncpg.Record | None:
    """Delete an endpoint (its dead letters go with it); returns its last view, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        _VIEW + " WHERE e.id = $1 AND ($2::text IS NULL OR e.tenant_id = $2) FOR UPDATE",
        endpoint_id,
        tenant_id,
    )
    if row is not None:
        await conn.execute("DELETE FROM oltp.webhook_endpoints WHERE id = $1", endpoint_id)
    return row


async def target_rows(conn: Reader) -> list[asyncpg.Record]:
    """Active endpoints with secret, cursor (``cx``, ``cursor_id``) and retry state."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, tenant_id, url, secret, kinds, cursor_xid::text::bigint AS cx, cursor_id,"
        " attempts, failing_since, next_attempt_at"
        " FROM oltp.webhook_endpoints WHERE active ORDER BY id"
    )
    return rows


async def dead_letter_ids(conn: Reader, endpoint_id: int) -> list[list[int]]:
    """The event ids of each dead-lettered batch of an endpoint, oldest first."""
    rows = await conn.fetch(
        "SELECT event_ids FROM oltp.webhook_dead_letters WHERE endpoint_id = $1 ORDER BY id",
        endpoint_id,
    )
    return [list(r["event_ids"]) for r in rows]


async def save_endpoint_cursor(
    conn: Reader, tenant_id: str, endpoint_id: int, last: Position
) -> None:
    """Move an endpoint's cursor (events it does not want were skipped)."""
    await conn.execute(
        "UPDATE oltp.webhook_endpoints SET cursor_xid = $3::text::xid8, cursor_id = $4"
        " WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
        str(last.xid),
        last.id,
    )


async def endpoint_succeeded(
    conn: Reader, tenant_id: str, endpoint_id: int, last: Position, n: int, status: int | None
) -> None:
    """A batch of ``n`` events was delivered: cursor past it, failure state cleared."""
    await conn.execute(
        "UPDATE oltp.webhook_endpoints SET cursor_xid = $3::text::xid8, cursor_id = $4,"
        " attempts = 0, failing_since = NULL, next_attempt_at = NULL, last_status = $5,"
        " last_error = NULL, last_success_at = now(), delivered = delivered + $6"
        " WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
        str(last.xid),
        last.id,
        status,
        n,
    )


async def endpoint_failed(
    conn: Reader,
    tenant_id: str,
    endpoint_id: int,
    attempt: int,
    next_at: dt.datetime,
    status: int | None,
    error: str | None,
) -> None:
    """A delivery attempt failed: the batch is tried again at ``next_at``."""
    await conn.execute(
        "UPDATE oltp.webhook_endpoints SET attempts = $3,"
        " failing_since = coalesce(failing_since, now()), next_attempt_at = $4,"
        " last_status = $5, last_error = $6 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
        attempt,
        next_at,
        status,
        error,
    )


async def dead_letter(
    pool: asyncpg.Pool,
    tenant_id: str,
    endpoint_id: int,
    event_ids: list[int | None],
    attempt: int,
    failing_since: dt.datetime | None,
    last: Position,
    status: int | None,
    error: str | None,
) -> None:
    """Give up on a batch: record it as a dead letter and move the cursor past it, together."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO oltp.webhook_dead_letters (tenant_id, endpoint_id, event_ids, attempts,"
            " failing_since, last_status, last_error)"
            " VALUES ($1, $2, $3, $4, coalesce($5, now()), $6, $7)",
            tenant_id,
            endpoint_id,
            event_ids,
            attempt,
            failing_since,
            status,
            error,
        )
        await conn.execute(
            "UPDATE oltp.webhook_endpoints SET cursor_xid = $3::text::xid8, cursor_id = $4,"
            " attempts = 0, failing_since = NULL, next_attempt_at = NULL, last_status = $5,"
            " last_error = $6 WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            endpoint_id,
            str(last.xid),
            last.id,
            status,
            error,
        )
