"""Inbound tier access: raw bounces/complaints stored compressed before they are acknowledged."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import asyncpg
import msgspec


class StoredInbound(msgspec.Struct, frozen=True):
    id: int
    raw: bytes
    rcpt_to: list[str]
    verp_job_id: int | None
    fbl: bool


async def store_raw(
    pool: asyncpg.Pool,
    raw: bytes,
    *,
    peer: str,
    mail_from: str,
    rcpt_to: Sequence[str],
    verp_job_id: int | None,
    fbl: bool,
) -> int:
    """Keep the raw message (compressed); returns its id. Called before replying 250."""
    value: int = await pool.fetchval(
        "INSERT INTO content.inbound_messages (peer, mail_from, rcpt_to, size, raw, verp_job_id,"
        " fbl) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        peer,
        mail_from,
        list(rcpt_to),
        len(raw),
        zlib.compress(raw, 6),
        verp_job_id,
        fbl,
    )
    return value


async def unprocessed(pool: asyncpg.Pool, limit: int = 500) -> list[StoredInbound]:
    """Stored messages whose effects were never applied (a crash between store and effects)."""
    rows = await pool.fetch(
        "SELECT id, raw, rcpt_to, verp_job_id, fbl FROM content.inbound_messages"
        " WHERE processed_at IS NULL ORDER BY id LIMIT $1",
        limit,
    )
    return [
        StoredInbound(
            r["id"], zlib.decompress(r["raw"]), list(r["rcpt_to"] or []), r["verp_job_id"], r["fbl"]
        )
        for r in rows
    ]


async def purge(pool: asyncpg.Pool, retention_days: int) -> int:
    """Drop raw inbound messages past their retention."""
    res: str = await pool.execute(
        "DELETE FROM content.inbound_messages"
        " WHERE received_at < now() - make_interval(days => $1)",
        retention_days,
    )
    return int(res.split()[-1])


async def mark_processed(pool: asyncpg.Pool, inbound_id: int, kind: str) -> None:
    """A stored message whose effect was applied outside the bounce pipeline (unsubscribes)."""
    await pool.execute(
        "UPDATE content.inbound_messages SET processed_at = now(), kind = $2 WHERE id = $1",
        inbound_id,
        kind,
    )
