"""Suppression list (oltp tier): addresses a tenant must never mail again (or until expiry)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from engine.store.pool import Conn


class Suppression(msgspec.Struct, frozen=True):
    tenant_id: str
    address: str
    reason: str
    source: str
    created_at: str
    expires_at: str | None


# The pseudonym of an address in SQL, equal to engine.gdpr.pseudonym.pseudonym for every address
# whose lower-casing agrees between Python and PostgreSQL (all ASCII ones): an erased recipient's
# suppression row keeps only that hash, and must still stop mail to them.
_PSEUDONYM_SQL = "'sha256:' || encode(sha256(convert_to(lower(u.a), 'UTF8')), 'hex')"


async def check(pool: asyncpg.Pool, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (tenant, address) pairs are suppressed now, in clear or erased (as a pseudonym).

    Addresses are compared lower-cased and returned lower-cased.
    """
    if not pairs:
        return set()
    rows = await pool.fetch(
        "SELECT s.tenant_id, lower(u.a) AS address FROM oltp.suppressions s"
        " JOIN unnest($1::text[], $2::text[]) AS u(t, a)"
        f" ON s.tenant_id = u.t AND s.address IN (lower(u.a), {_PSEUDONYM_SQL})"
        " WHERE s.expires_at IS NULL OR s.expires_at > now()",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r["tenant_id"], r["address"]) for r in rows}


async def add(
    conn: Conn | asyncpg.Pool,
    entries: Sequence[tuple[str, str, str, str, float | None]],
) -> int:
    """Add (tenant, address, reason, source, ttl_s or None for permanent); returns rows written.

    A permanent entry replaces a temporary one; a temporary one never shortens a permanent one.
    """
    entries = merge_entries(entries)
    if not entries:
        return 0
    res: str = await conn.execute(
        "INSERT INTO oltp.suppressions (tenant_id, address, reason, source, expires_at)"
        " SELECT t, lower(a), r, s, CASE WHEN ttl IS NULL THEN NULL"
        " ELSE now() + make_interval(secs => ttl) END"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])"
        " AS u(t, a, r, s, ttl)"
        " ON CONFLICT (tenant_id, address) DO UPDATE SET reason = EXCLUDED.reason,"
        " source = EXCLUDED.source, created_at = now(),"
        " expires_at = CASE WHEN suppressions.expires_at IS NULL OR EXCLUDED.expires_at IS NULL"
        " THEN NULL ELSE greatest(suppressions.expires_at, EXCLUDED.expires_at) END",
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2] for e in entries],
        [e[3] for e in entries],
        [e[4] for e in entries],
    )
    return int(res.split()[-1])


def merge_entries(
    entries: Sequence[tuple[str, str, str, str, float | None]],
) -> list[tuple[str, str, str, str, float | None]]:
    """One entry per (tenant, address), merged as the upsert would merge them one by one.

    PostgreSQL refuses an ``ON CONFLICT DO UPDATE`` that meets the same key twice in one
    statement, and a batch of bounces often names one address twice (a DSN and its replay, two
    jobs to one recipient): a permanent entry wins over a temporary one, the longer ttl over the
    shorter, and otherwise the later entry's reason and source are kept.
    """
    merged: dict[tuple[str, str], tuple[str, str, str, str, float | None]] = {}
    for entry in entries:
        key = (entry[0], entry[1].lower())
        earlier = merged.get(key)
        if earlier is not None:
            if earlier[4] is None and entry[4] is not None:
                continue
            if earlier[4] is not None and entry[4] is not None and earlier[4] > entry[4]:
                entry = (*entry[:4], earlier[4])
        merged[key] = entry
    return list(merged.values())


async def remove(pool: asyncpg.Pool | Conn, tenant_id: str, address: str) -> bool:
    res: str = await pool.execute(
        "DELETE FROM oltp.suppressions WHERE tenant_id = $1 AND address = lower($2)",
        tenant_id,
        address,
    )
    return res.endswith(" 1")


async def page(
    pool: asyncpg.Pool | Conn, tenant_id: str | None, *, limit: int = 100, after: str | None = None
) -> list[Suppression]:
    """A page of suppressions ordered by address (keyset pagination with ``after``)."""
    rows = await pool.fetch(
        "SELECT tenant_id, address, reason, source, created_at::text, expires_at::text"
        " FROM oltp.suppressions WHERE ($1::text IS NULL OR tenant_id = $1)"
        " AND ($2::text IS NULL OR address > $2) ORDER BY tenant_id, address LIMIT $3",
        tenant_id,
        after,
        limit,
    )
    return [Suppression(*r.values()) for r in rows]
