"""Tenants (oltp tier): a job for a tenant that was never added is refused."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from engine.store.pool import Conn


async def add(pool: asyncpg.Pool, tenant_id: str, name: str | None = None) -> bool:
    """Create a tenant; returns False if it already existed (its name is then updated)."""
    row = await pool.fetchrow(
        "INSERT INTO oltp.tenants (tenant_id, name) VALUES ($1, $2)"
        " ON CONFLICT (tenant_id) DO UPDATE SET name = coalesce(EXCLUDED.name, tenants.name)"
        " RETURNING (xmax = 0) AS inserted",
        tenant_id,
        name,
    )
    return bool(row and row["inserted"])


async def known(conn: Conn | asyncpg.Pool, tenant_ids: Iterable[str]) -> set[str]:
    """Which of these tenants exist (one query)."""
    ids = list(set(tenant_ids))
    if not ids:
        return set()
    rows = await conn.fetch(
        "SELECT tenant_id FROM oltp.tenants WHERE tenant_id = ANY($1::text[])", ids
    )
    return {r["tenant_id"] for r in rows}
