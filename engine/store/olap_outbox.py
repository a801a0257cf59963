"""The olap outbox (migration 140): counts bound for an olap tier on another server.

With ``[database.olap] dsn`` naming another server, the writers of counts (outcomes, inbound
effects, unsubscribes) call :func:`put` in their own transaction instead of
:mod:`engine.store.stats` / :mod:`engine.store.facts`; :mod:`engine.olap_drain` moves the rows
to the olap server exactly once. Each row is one tenant's counts of one batch.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from engine.store import facts, stats
from engine.store.pool import Conn

__all__ = [
    "Key",
    "Row",
    "Totals",
    "applied",
    "apply",
    "backlog",
    "claim",
    "delete",
    "existing",
    "forget",
    "lock",
    "merge",
    "pending",
    "put",
]

#: An outbox row's key: (tenant_id, id).
Key = tuple[str, int]


class Row(msgspec.Struct, frozen=True):
    tenant_id: str
    id: int
    payload: dict[str, Any]


async def put(
    conn: Conn,
    counts: Iterable[tuple[tuple[str, str, str], str, int]] = (),
    found: Iterable[facts.Fact] = (),
    latencies: Iterable[facts.Latency] = (),
    day: dt.date | None = None,
) -> None:
    """Store the counts :func:`stats.add` (of ``day``, default today UTC) and :func:`facts.add`
    would write, one row per tenant, in one statement, in ``conn``'s transaction."""
    day_s = (day or dt.datetime.now(dt.UTC).date()).isoformat()
    per: dict[str, dict[str, list[list[Any]]]] = defaultdict(lambda: {"s": [], "f": [], "l": []})
    for (tenant, sender, provider), column, n in counts:
        if column not in stats.COLUMNS:
            raise ValueError(f"unknown daily_stats column {column!r}")
        per[tenant]["s"].append([day_s, sender, provider, column, n])
    for f, n in Counter(found).items():
        if f.outcome not in facts.OUTCOMES:
            raise ValueError(f"unknown outcome {f.outcome!r}")
        per[f.tenant_id]["f"].append(
            [f.day.isoformat(), f.campaign_id, f.sender, f.provider, f.outcome, f.reason, n]
        )
    for (tenant, when, campaign, kind, le_ms), n in facts.histogram(latencies).items():
        per[tenant]["l"].append([when.isoformat(), campaign, kind, le_ms, n])
    if not per:
        return
    tenants = sorted(per)
    await conn.execute(
        "INSERT INTO queue.olap_outbox (tenant_id, payload)"
        " SELECT * FROM unnest($1::text[], $2::jsonb[])",
        tenants,
        [per[t] for t in tenants],
    )


async def pending(db: asyncpg.Pool | Conn, limit: int) -> list[Row]:
    """The oldest ``limit`` outbox rows (by id; ids commit out of order, see migration 140)."""
    rows = await db.fetch(
        "SELECT tenant_id, id, payload FROM queue.olap_outbox ORDER BY id LIMIT $1", limit
    )
    return [Row(r["tenant_id"], r["id"], r["payload"]) for r in rows]


async def delete(db: asyncpg.Pool | Conn, keys: Sequence[Key]) -> None:
    """Remove drained rows from the outbox."""
    await db.execute(
        "DELETE FROM queue.olap_outbox o USING unnest($1::text[], $2::bigint[]) AS k(t, i)"
        " WHERE o.tenant_id = k.t AND o.id = k.i",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def existing(db: asyncpg.Pool | Conn, keys: Sequence[Key]) -> set[Key]:
    """Which of ``keys`` are still in the outbox."""
    rows = await db.fetch(
        "SELECT o.tenant_id, o.id FROM queue.olap_outbox o"
        " JOIN unnest($1::text[], $2::bigint[]) AS k(t, i) ON o.tenant_id = k.t AND o.id = k.i",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["tenant_id"], r["id"]) for r in rows}


async def backlog(db: asyncpg.Pool | Conn) -> tuple[int, float]:
    """(rows waiting, age in seconds of the oldest; 0 when empty)."""
    row = await db.fetchrow(
        "SELECT count(*) AS n,"
        " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age"
        " FROM queue.olap_outbox"
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


# On the olap server.


async def lock(conn: Conn, key: int) -> bool:
    """One drainer at a time (a transaction-level advisory lock on the olap server)."""
    got: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)
    return got


async def applied(conn: Conn, limit: int) -> list[Key]:
    """Rows recorded as applied (kept until their outbox row is gone)."""
    rows = await conn.fetch(
        "SELECT tenant_id, id FROM olap.outbox_applied ORDER BY id LIMIT $1", limit
    )
    return [(r["tenant_id"], r["id"]) for r in rows]


async def forget(conn: Conn, keys: Sequence[Key]) -> None:
    """Drop applied marks whose outbox rows are gone (they can never be read again)."""
    await conn.execute(
        "DELETE FROM olap.outbox_applied a USING unnest($1::text[], $2::bigint[]) AS k(t, i)"
        " WHERE a.tenant_id = k.t AND a.id = k.i",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def claim(conn: Conn, keys: Sequence[Key]) -> set[Key]:
    """Mark ``keys`` applied; returns those not applied before (only these are counted)."""
    rows = await conn.fetch(
        "INSERT INTO olap.outbox_applied (tenant_id, id)"
        " SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING"
        " RETURNING tenant_id, id",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["tenant_id"], r["id"]) for r in rows}


class Totals(msgspec.Struct, frozen=True):
    """What a batch of outbox rows adds, merged (one statement per table and stats day)."""

    per_day: dict[dt.date, list[tuple[tuple[str, str, str], str, int]]]
    found: dict[facts.Fact, int]
    hist: dict[facts.Cell, int]


def merge(rows: Iterable[Row]) -> Totals:
    """The counts of ``rows`` added up."""
    per_day: dict[dt.date, list[tuple[tuple[str, str, str], str, int]]] = defaultdict(list)
    found: Counter[facts.Fact] = Counter()
    hist: Counter[facts.Cell] = Counter()
    for row in rows:
        t = row.tenant_id
        p = row.payload
        for day, sender, provider, column, n in p.get("s", ()):
            per_day[dt.date.fromisoformat(day)].append(((t, sender, provider), column, n))
        for day, campaign, sender, provider, outcome, reason, n in p.get("f", ()):
            when = dt.date.fromisoformat(day)
            found[facts.Fact(t, when, campaign, sender, provider, outcome, reason)] += n
        for day, campaign, kind, le_ms, n in p.get("l", ()):
            hist[(t, dt.date.fromisoformat(day), campaign, kind, le_ms)] += n
    return Totals(dict(per_day), dict(found), dict(hist))


async def apply(conn: Conn, totals: Totals) -> None:
    """Add ``totals`` to the olap tables (on the olap server, in the claiming transaction)."""
    for day, counts in sorted(totals.per_day.items()):
        await stats.add(conn, counts, day)
    await facts.add_counted(conn, totals.found, totals.hist)
