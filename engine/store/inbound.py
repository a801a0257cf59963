"""Inbound tier access: raw bounces/complaints stored compressed before they are acknowledged.

A stored message is *pending* until its effects are applied (``processed_at``) or it is
*quarantined* (``quarantined_at``: its parse used up the CPU budget or crashed the parse worker
twice). Quarantined messages are never parsed again unless :func:`requeue` clears the mark.
(De)compression runs in a thread: zlib releases the GIL, and a message of several MiB would
stall the event loop (bench/README.md).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec


class StoredInbound(msgspec.Struct, frozen=True):
    """A pending stored message, with what the listener knew when it accepted it."""

    id: int
    raw: bytes
    rcpt_to: list[str]
    verp_job_id: int | None
    fbl: bool
    peer: str = ""
    mail_from: str = ""


class Quarantined(msgspec.Struct, frozen=True):
    """A quarantined message, for ``engine bounce quarantined`` and the runbook."""

    id: int
    received_at: datetime
    quarantined_at: datetime
    reason: str
    peer: str
    mail_from: str
    size: int
    parse_cpu_ms: float | None


async def _in_thread(func: Callable[..., bytes], *args: object) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


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
    """Keep the raw message (compressed off the event loop); returns its id. Called before 250."""
    packed = await _in_thread(zlib.compress, raw, 6)
    value: int = await pool.fetchval(
        "INSERT INTO content.inbound_messages (peer, mail_from, rcpt_to, size, raw, verp_job_id,"
        " fbl) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        peer,
        mail_from,
        list(rcpt_to),
        len(raw),
        packed,
        verp_job_id,
        fbl,
    )
    return value


async def pending(
    pool: asyncpg.Pool,
    limit: int,
    *,
    exclude: Sequence[int] = (),
    min_age_s: float = 0.0,
    max_bytes: int | None = None,
) -> list[StoredInbound]:
    """Up to ``limit`` stored messages never processed nor quarantined, oldest first.

    ``exclude``: ids already queued in memory. ``min_age_s`` leaves alone rows so new that the
    listener may still be about to queue them itself (requeued rows, which keep their last
    quarantine reason, are old news to it and come at once). ``max_bytes`` stops the page once
    that many raw (uncompressed) bytes are in it (the first row always comes).
    """
    rows = await pool.fetch(
        "SELECT id, raw, size, rcpt_to, verp_job_id, fbl, peer, mail_from"
        " FROM content.inbound_messages"
        " WHERE processed_at IS NULL AND quarantined_at IS NULL AND NOT (id = ANY($2::bigint[]))"
        " AND (received_at <= now() - make_interval(secs => $3) OR quarantine_reason IS NOT NULL)"
        " ORDER BY id LIMIT $1",
        limit,
        list(exclude),
        min_age_s,
    )
    out: list[StoredInbound] = []
    total = 0
    for r in rows:
        total += r["size"]
        if out and max_bytes is not None and total > max_bytes:
            break
        out.append(
            StoredInbound(
                r["id"],
                await _in_thread(zlib.decompress, r["raw"]),
                list(r["rcpt_to"] or []),
                r["verp_job_id"],
                r["fbl"],
                r["peer"] or "",
                r["mail_from"] or "",
            )
        )
    return out


async def quarantine(pool: asyncpg.Pool, inbound_id: int, reason: str, cpu_ms: float) -> None:
    """Mark a message as not to be parsed again automatically (see :func:`requeue`)."""
    await pool.execute(
        "UPDATE content.inbound_messages SET quarantined_at = now(), quarantine_reason = $2,"
        " parse_cpu_ms = $3 WHERE id = $1",
        inbound_id,
        reason,
        cpu_ms,
    )


async def record_parse_cpu(pool: asyncpg.Pool, cpu_ms: Sequence[tuple[int, float]]) -> None:
    """Keep the parse CPU of each message of a batch (one statement)."""
    if not cpu_ms:
        return
    await pool.execute(
        "UPDATE content.inbound_messages m SET parse_cpu_ms = u.ms"
        " FROM unnest($1::bigint[], $2::real[]) AS u(id, ms) WHERE m.id = u.id",
        [i for i, _ in cpu_ms],
        [ms for _, ms in cpu_ms],
    )


async def requeue(pool: asyncpg.Pool, ids: Sequence[int]) -> list[int]:
    """Clear the quarantine mark of ``ids``; returns those that were quarantined and pending.

    ``quarantine_reason`` stays: the history of the row, and how :func:`pending` tells a requeued
    row from one the listener is still queueing."""
    rows = await pool.fetch(
        "UPDATE content.inbound_messages SET quarantined_at = NULL"
        " WHERE id = ANY($1::bigint[]) AND quarantined_at IS NOT NULL AND processed_at IS NULL"
        " RETURNING id",
        list(ids),
    )
    return sorted(r["id"] for r in rows)


async def states(pool: asyncpg.Pool, ids: Sequence[int]) -> dict[int, str]:
    """``processed``, ``quarantined`` or ``pending`` for each id that exists."""
    rows = await pool.fetch(
        "SELECT id, CASE WHEN processed_at IS NOT NULL THEN 'processed'"
        " WHEN quarantined_at IS NOT NULL THEN 'quarantined' ELSE 'pending' END AS state"
        " FROM content.inbound_messages WHERE id = ANY($1::bigint[])",
        list(ids),
    )
    return {r["id"]: r["state"] for r in rows}


async def quarantined(pool: asyncpg.Pool, limit: int = 100) -> list[Quarantined]:
    """The most recently quarantined messages still waiting for an operator."""
    rows = await pool.fetch(
        "SELECT id, received_at, quarantined_at, quarantine_reason, peer, mail_from, size,"
        " parse_cpu_ms FROM content.inbound_messages"
        " WHERE quarantined_at IS NOT NULL AND processed_at IS NULL"
        " ORDER BY quarantined_at DESC, id DESC LIMIT $1",
        limit,
    )
    return [
        Quarantined(
            r["id"],
            r["received_at"],
            r["quarantined_at"],
            r["quarantine_reason"] or "",
            r["peer"] or "",
            r["mail_from"] or "",
            r["size"],
            r["parse_cpu_ms"],
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


async def received_at(conn: Any, ids: Sequence[int]) -> dict[int, float]:
    """When each stored inbound message arrived (Unix seconds), by id."""
    rows = await conn.fetch(
        "SELECT id, extract(epoch FROM received_at)::float8 AS at"
        " FROM content.inbound_messages WHERE id = ANY($1::bigint[])",
        list(ids),
    )
    return {r["id"]: r["at"] for r in rows}
