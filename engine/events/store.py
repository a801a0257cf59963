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

# Which tenants have new events (webhook worker): positions only, no payload.
_TENANTS_AFTER = """
SELECT tenant_id, xid::text::bigint AS x, id FROM oltp.events
 WHERE xid IS NOT NULL AND (xid, id) > ($1::text::xid8, $2::bigint)
   AND xid < (SELECT oltp.events_horizon())
 ORDER BY xid, id LIMIT $3
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
    data, meta = row["data"], row["metadata"]
    at: dt.datetime = row["created_at"]
    return Position(row["x"], row["id"]), Event(
        tenant_id=row["tenant_id"],
        kind=row["kind"],
        job_id=row["job_id"],
        message_id=row["message_id"],
        recipient=row["recipient"],
        reason=row["reason"],
        reply=row["reply"],
        at=at.astimezone(dt.UTC),
        data=None if data is None else orjson.loads(data),
        id=row["id"],
        campaign_id=row["campaign_id"],
        idempotency_key=row["idempotency_key"],
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
    rows = await conn.fetch(_TENANTS_AFTER, str(after.xid), after.id, limit)
    if not rows:
        return set(), None
    return {r["tenant_id"] for r in rows}, Position(rows[-1]["x"], rows[-1]["id"])


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
