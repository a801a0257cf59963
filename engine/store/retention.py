"""The statements of the retention purges (:mod:`engine.retention`): count or delete the rows
of a tier that are past their age, in batches; attachments no remaining body refers to."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import asyncpg

_UNFINISHED = "('queued', 'deferred', 'sending')"

_CUTOFF = "now() - make_interval(days => $1)"

# Each rule: the table and the predicate of a row that is due ($1 = days).
_RULES: dict[str, tuple[str, str]] = {
    "events": ("oltp.events", f"created_at < {_CUTOFF}"),
    "jobs": (
        "queue.jobs",
        f"state NOT IN {_UNFINISHED} AND coalesce(finished_at, updated_at) < {_CUTOFF}",
    ),
    "inbound": ("content.inbound_messages", f"received_at < {_CUTOFF}"),
    "audit": ("oltp.audit_log", f"created_at < {_CUTOFF}"),
    "replay": ("oltp.inbound_counted", f"created_at < {_CUTOFF}"),
    "content": (
        "content.email_content c",
        f"c.created_at < {_CUTOFF} AND NOT EXISTS (SELECT 1 FROM queue.jobs j"
        " WHERE j.tenant_id = c.tenant_id AND j.content_sha256 = c.sha256"
        f" AND j.state IN {_UNFINISHED})",
    ),
}


async def count_due(pool: asyncpg.Pool, rule: str, days: int) -> int:
    """How many rows of ``rule`` are older than ``days`` (what a dry run reports)."""
    table, where = _RULES[rule]
    value: int = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", days)
    return value


async def purge_due(pool: asyncpg.Pool, rule: str, days: int, batch: int) -> int:
    """Delete due rows in batches (by ctid, so every table works whatever its key)."""
    table, where = _RULES[rule]
    total = 0
    while True:
        if rule == "content":
            # A body and its metadata row go together.
            res: str = await pool.execute(
                "WITH doomed AS (SELECT c.tenant_id, c.sha256, c.ctid FROM content.email_content c"
                f" WHERE {where} LIMIT $2),"
                " meta AS (DELETE FROM content.email_messages m USING doomed d"
                " WHERE m.tenant_id = d.tenant_id AND m.sha256 = d.sha256)"
                " DELETE FROM content.email_content c USING doomed d WHERE c.ctid = d.ctid",
                days,
                batch,
            )
        else:
            res = await pool.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE {where} LIMIT $2))",
                days,
                batch,
            )
        n = int(res.split()[-1])
        total += n
        if n < batch:
            return total


async def old_attachments(pool: asyncpg.Pool, days: int) -> list[asyncpg.Record]:
    """tenant_id, sha256, created_at of every attachment stored more than ``days`` ago."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT tenant_id, sha256, created_at FROM content.attachments"
        f" WHERE created_at < {_CUTOFF}",
        days,
    )
    return rows


async def bodies_since(
    pool: asyncpg.Pool, tenant_id: str, since: dt.datetime, after: bytes, limit: int
) -> list[asyncpg.Record]:
    """sha256, codec, body of the tenant's contents stored since ``since``, hashes > ``after``."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT sha256, codec, body FROM content.email_content WHERE tenant_id = $1"
        " AND created_at >= $2 AND sha256 > $3 ORDER BY sha256 LIMIT $4",
        tenant_id,
        since,
        after,
        limit,
    )
    return rows


async def delete_attachments(pool: asyncpg.Pool, keys: Collection[tuple[str, bytes]]) -> int:
    """Delete attachments by (tenant, sha256); returns how many went."""
    res: str = await pool.execute(
        "DELETE FROM content.attachments a USING unnest($1::text[], $2::bytea[]) AS u(t, h)"
        " WHERE a.tenant_id = u.t AND a.sha256 = u.h",
        [t for t, _ in keys],
        [h for _, h in keys],
    )
    return int(res.split()[-1])


#: The rules whose table is in the content tier (run on its server when it lives apart).
CONTENT_RULES = frozenset({"content", "inbound"})


async def old_contents(
    content: asyncpg.Pool, days: int, after: tuple[str, bytes], limit: int
) -> list[tuple[str, bytes]]:
    """(tenant, sha256) of bodies stored more than ``days`` ago, after ``after`` in key order
    (the content tier on its own server: which of them jobs still use is asked apart)."""
    rows = await content.fetch(
        "SELECT tenant_id, sha256 FROM content.email_content"
        f" WHERE created_at < {_CUTOFF} AND (tenant_id, sha256) > ($2, $3)"
        " ORDER BY tenant_id, sha256 LIMIT $4",
        days,
        after[0],
        after[1],
        limit,
    )
    return [(r["tenant_id"], bytes(r["sha256"])) for r in rows]


async def contents_in_use(
    main: asyncpg.Pool, keys: Collection[tuple[str, bytes]]
) -> set[tuple[str, bytes]]:
    """Which of ``keys`` an unfinished job still points at (on the queue tier's server)."""
    rows = await main.fetch(
        "SELECT DISTINCT j.tenant_id, j.content_sha256 FROM queue.jobs j"
        " JOIN unnest($1::text[], $2::bytea[]) AS k(t, h)"
        " ON j.tenant_id = k.t AND j.content_sha256 = k.h"
        f" WHERE j.state IN {_UNFINISHED}",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["tenant_id"], bytes(r["content_sha256"])) for r in rows}


async def delete_contents(
    content: asyncpg.Pool, keys: Collection[tuple[str, bytes]], days: int
) -> int:
    """Delete bodies (with their metadata) of ``keys`` still older than ``days``: one an
    enqueue reused since it was listed is young again (``store(touch=True)``) and stays."""
    res: str = await content.execute(
        "WITH doomed AS (SELECT c.tenant_id, c.sha256, c.ctid FROM content.email_content c"
        " JOIN unnest($2::text[], $3::bytea[]) AS k(t, h) ON c.tenant_id = k.t"
        f" AND c.sha256 = k.h WHERE c.created_at < {_CUTOFF} FOR UPDATE OF c),"
        " meta AS (DELETE FROM content.email_messages m USING doomed d"
        " WHERE m.tenant_id = d.tenant_id AND m.sha256 = d.sha256)"
        " DELETE FROM content.email_content c USING doomed d WHERE c.ctid = d.ctid",
        days,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return int(res.split()[-1])
