"""SQL of the API keys (``oltp.api_keys``, migration 090)."""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from engine.store.pool import Conn

_COLUMNS = (
    "prefix, tenant_id, scope, name, created_by, created_at, last_used_at, revoked_at, replaced_by"
)


class KeyView(msgspec.Struct, frozen=True):
    """A key as listed: everything but its digest."""

    prefix: str
    tenant_id: str
    scope: str
    name: str
    created_by: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    replaced_by: str | None


class StoredKey(msgspec.Struct, frozen=True):
    """What authentication needs of a key."""

    prefix: str
    tenant_id: str
    scope: str
    digest: bytes
    revoked: bool


def _view(row: asyncpg.Record) -> KeyView:
    return KeyView(**dict(row.items()))


async def insert(
    conn: Conn | asyncpg.Pool,
    *,
    prefix: str,
    tenant_id: str,
    scope: str,
    digest: bytes,
    name: str,
    created_by: str,
) -> KeyView:
    """Store a new key."""
    row = await conn.fetchrow(
        "INSERT INTO oltp.api_keys (prefix, tenant_id, scope, hash, name, created_by)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        prefix,
        tenant_id,
        scope,
        digest,
        name,
        created_by,
    )
    assert row is not None
    return _view(row)


async def get(conn: Conn | asyncpg.Pool, prefix: str, tenant_id: str | None) -> KeyView | None:
    """One key by prefix (of ``tenant_id`` when given: another tenant's key is None)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM oltp.api_keys WHERE prefix = $1"
        " AND ($2::text IS NULL OR tenant_id = $2)",
        prefix,
        tenant_id,
    )
    return None if row is None else _view(row)


async def listing(
    conn: Conn | asyncpg.Pool, tenant_id: str | None, *, include_revoked: bool
) -> list[KeyView]:
    """Keys of one tenant (or all), oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM oltp.api_keys WHERE ($1::text IS NULL OR tenant_id = $1)"
        " AND ($2 OR revoked_at IS NULL) ORDER BY tenant_id, created_at, prefix",
        tenant_id,
        include_revoked,
    )
    return [_view(r) for r in rows]


async def revoke(
    conn: Conn | asyncpg.Pool, prefix: str, tenant_id: str | None, replaced_by: str | None = None
) -> KeyView | None:
    """Mark a key revoked (idempotent: an already revoked key keeps its first time)."""
    row = await conn.fetchrow(
        "UPDATE oltp.api_keys SET revoked_at = coalesce(revoked_at, now()),"
        " replaced_by = coalesce(replaced_by, $3)"
        " WHERE prefix = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        f" RETURNING {_COLUMNS}",
        prefix,
        tenant_id,
        replaced_by,
    )
    return None if row is None else _view(row)


async def lookup(pool: asyncpg.Pool, prefix: str) -> StoredKey | None:
    """The digest, tenant and scope of a key, for authentication."""
    row = await pool.fetchrow(
        "SELECT prefix, tenant_id, scope, hash AS digest, revoked_at IS NOT NULL AS revoked"
        " FROM oltp.api_keys WHERE prefix = $1",
        prefix,
    )
    return None if row is None else StoredKey(**dict(row.items()))


async def touch(pool: asyncpg.Pool, prefixes: list[str]) -> None:
    """Record that these keys were used now (one statement for all of them)."""
    await pool.execute(
        "UPDATE oltp.api_keys SET last_used_at = now() WHERE prefix = ANY($1::text[])", prefixes
    )
