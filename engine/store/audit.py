"""``oltp.audit_log`` (migration 061): append an operator action, read the newest ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from engine.store.pool import Conn


async def insert_entry(
    pool: asyncpg.Pool | Conn,
    tenant_id: str,
    actor: str,
    action: str,
    target: str | None,
    detail: Mapping[str, Any],
) -> int:
    """Append one row; returns its id."""
    value: int = await pool.fetchval(
        "INSERT INTO oltp.audit_log (tenant_id, actor, action, target, detail)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        tenant_id,
        actor,
        action,
        target,
        dict(detail),
    )
    return value


async def newest_entries(
    pool: asyncpg.Pool, tenant_id: str | None, action: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows, newest first, optionally of one tenant and/or one action."""
    rows = await pool.fetch(
        "SELECT id, tenant_id, actor, action, target, detail, created_at FROM oltp.audit_log"
        " WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR action = $2)"
        " ORDER BY created_at DESC, id DESC LIMIT $3",
        tenant_id,
        action,
        limit,
    )
    return [dict(r.items()) for r in rows]
