"""Tenants' sending domains (``oltp.sending_domains``); the enqueue rules in ``engine.settings``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg
import msgspec

from engine.config import SecurityConfig
from engine.store.pool import Conn, connect_one


class DomainRow(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    domain: str
    token: str
    verified_at: dt.datetime | None
    verified_by: str | None
    created_at: dt.datetime


_COLS = "tenant_id, domain, token, verified_at, verified_by, created_at"


def _row(r: asyncpg.Record) -> DomainRow:
    return msgspec.convert(dict(r), DomainRow)


async def add(pool: asyncpg.Pool | Conn, tenant_id: str, domain: str, token: str) -> DomainRow:
    """Register ``domain`` for ``tenant_id`` (idempotent: an existing row is returned as is)."""
    row = await pool.fetchrow(
        "INSERT INTO oltp.sending_domains (tenant_id, domain, token) VALUES ($1, $2, $3)"
        f" ON CONFLICT (tenant_id, domain) DO UPDATE SET token = sending_domains.token"
        f" RETURNING {_COLS}",
        tenant_id,
        domain,
        token,
    )
    assert row is not None
    return _row(row)


async def get(pool: asyncpg.Pool | Conn, tenant_id: str, domain: str) -> DomainRow | None:
    row = await pool.fetchrow(
        f"SELECT {_COLS} FROM oltp.sending_domains WHERE tenant_id = $1 AND domain = $2",
        tenant_id,
        domain,
    )
    return _row(row) if row is not None else None


async def list_domains(pool: asyncpg.Pool | Conn, tenant_id: str | None) -> list[DomainRow]:
    rows = await pool.fetch(
        f"SELECT {_COLS} FROM oltp.sending_domains WHERE $1::text IS NULL OR tenant_id = $1"
        " ORDER BY tenant_id, domain",
        tenant_id,
    )
    return [_row(r) for r in rows]


async def conflicts(
    pool: asyncpg.Pool | Conn, tenant_id: str, domain: str, parents: list[str]
) -> list[tuple[str, str]]:
    """Verified (tenant, domain) of OTHER tenants at, above or below ``domain``."""
    rows = await pool.fetch(
        "SELECT tenant_id, domain FROM oltp.sending_domains"
        " WHERE verified_at IS NOT NULL AND tenant_id <> $1"
        " AND (domain = ANY($2::text[]) OR right(domain, length($3) + 1) = '.' || $3)"
        " ORDER BY domain",
        tenant_id,
        parents,
        domain,
    )
    return [(r["tenant_id"], r["domain"]) for r in rows]


async def mark_verified(
    pool: asyncpg.Pool | Conn, tenant_id: str, domain: str, by: str
) -> DomainRow | None:
    row = await pool.fetchrow(
        "UPDATE oltp.sending_domains SET verified_at = coalesce(verified_at, now()),"
        " verified_by = coalesce(verified_by, $3) WHERE tenant_id = $1 AND domain = $2"
        f" RETURNING {_COLS}",
        tenant_id,
        domain,
        by,
    )
    return _row(row) if row is not None else None


async def remove(pool: asyncpg.Pool | Conn, tenant_id: str, domain: str) -> bool:
    status = await pool.execute(
        "DELETE FROM oltp.sending_domains WHERE tenant_id = $1 AND domain = $2", tenant_id, domain
    )
    return status.endswith(" 1")


async def verified_owners(conn: asyncpg.Pool | Conn, names: Iterable[str]) -> dict[str, str]:
    """The verifying tenant of each of ``names`` that is a verified sending domain (one query)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT domain, tenant_id FROM oltp.sending_domains"
        " WHERE verified_at IS NOT NULL AND domain = ANY($1::text[])",
        wanted,
    )
    return {r["domain"]: r["tenant_id"] for r in rows}


async def with_domains(conn: asyncpg.Pool | Conn, tenant_ids: Iterable[str]) -> set[str]:
    """Which of these tenants registered at least one sending domain (verified or not)."""
    ids = sorted(set(tenant_ids))
    if not ids:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT tenant_id FROM oltp.sending_domains WHERE tenant_id = ANY($1::text[])",
        ids,
    )
    return {r["tenant_id"] for r in rows}


async def write_rules(pool: asyncpg.Pool | Conn, *, enforce: bool, raw_trace: str) -> None:
    """Copy the ``[security]`` enqueue rules to ``engine.settings`` for the SQL enqueue path."""
    await pool.execute(
        "INSERT INTO engine.settings (key, value) VALUES ('enforce_sender_domains', $1),"
        " ('raw_trace_headers', $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        "true" if enforce else "false",
        raw_trace,
    )


async def publish_rules(dsn: str, security: SecurityConfig) -> None:
    """:func:`write_rules` for ``[security]`` over one connection to ``dsn``, after migrating:
    as the login role that migrates, because ``[database] role`` may not change settings."""
    conn = await connect_one(dsn)
    try:
        await write_rules(
            conn, enforce=security.enforce_sender_domains, raw_trace=security.raw_trace_headers
        )
    finally:
        await conn.close()


async def tenant_dkim_records(
    pool: asyncpg.Pool | Conn, tenant_id: str, domain: str
) -> list[tuple[str, str]]:
    """``(selector, public TXT)`` of the tenant's stored DKIM keys for ``domain`` (not retired):
    a published key of ours is the other proof of owning the domain."""
    rows = await pool.fetch(
        "SELECT selector, public_txt FROM oltp.dkim_keys"
        " WHERE tenant_id = $1 AND domain = $2 AND state <> 'retired' ORDER BY selector",
        tenant_id,
        domain,
    )
    return [(r["selector"], r["public_txt"]) for r in rows]
