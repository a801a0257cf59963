"""Tenants (oltp tier): a job for a tenant that was never added is refused."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

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


async def grant_platform(pool: asyncpg.Pool | Conn, role: str, tenant_id: str) -> bool:
    """Let database role ``role`` (a member of engine_platform) enqueue for ``tenant_id``."""
    status = await pool.execute(
        "INSERT INTO engine.platform_tenants (role_name, tenant_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        role,
        tenant_id,
    )
    return status.endswith(" 1")


async def revoke_platform(pool: asyncpg.Pool | Conn, role: str, tenant_id: str) -> bool:
    status = await pool.execute(
        "DELETE FROM engine.platform_tenants WHERE role_name = $1 AND tenant_id = $2",
        role,
        tenant_id,
    )
    return status.endswith(" 1")


@contextlib.asynccontextmanager
async def scoped(pool: asyncpg.Pool, tenant_id: str) -> AsyncIterator[Conn]:
    """A transaction that sees and writes ``tenant_id``'s rows only: ``engine_api`` with the
    tenant set by ``engine.set_tenant`` (the login role must be a member of engine_api)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE engine_api")
        await conn.execute("SELECT engine.set_tenant($1)", tenant_id)
        yield conn
