"""``oltp.sender_compliance`` (migration 060): the last verdict per (tenant, sender domain)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import asyncpg
import msgspec

from engine.compliance.check import ComplianceReport, Status

Action = Literal["none", "warn", "throttle", "block"]


class StoredVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """A domain's last check as stored, with what was done about it."""

    tenant_id: str
    domain: str
    status: Status
    action: Action
    reasons: list[str]
    rate_ceiling_per_s: float | None
    checked_at: dt.datetime
    report: ComplianceReport


_COLUMNS = "tenant_id, domain, status, action, reasons, report, rate_ceiling_per_s, checked_at"


def _verdict(row: asyncpg.Record) -> StoredVerdict:
    return StoredVerdict(
        tenant_id=row["tenant_id"],
        domain=row["domain"],
        status=row["status"],
        action=row["action"],
        reasons=list(row["reasons"]),
        rate_ceiling_per_s=row["rate_ceiling_per_s"],
        checked_at=row["checked_at"],
        report=msgspec.convert(row["report"], ComplianceReport, strict=False),
    )


async def save(
    pool: asyncpg.Pool,
    tenant_id: str,
    report: ComplianceReport,
    *,
    action: Action,
    rate_ceiling_per_s: float | None,
) -> StoredVerdict:
    """Insert or replace the domain's verdict."""
    row = await pool.fetchrow(
        "INSERT INTO oltp.sender_compliance (tenant_id, domain, status, action, reasons, report,"
        " rate_ceiling_per_s, checked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (tenant_id, domain) DO UPDATE SET status = EXCLUDED.status,"
        " action = EXCLUDED.action, reasons = EXCLUDED.reasons, report = EXCLUDED.report,"
        " rate_ceiling_per_s = EXCLUDED.rate_ceiling_per_s, checked_at = EXCLUDED.checked_at"
        f" RETURNING {_COLUMNS}",
        tenant_id,
        report.domain,
        report.status,
        action,
        report.reasons,
        msgspec.to_builtins(report),
        rate_ceiling_per_s,
        report.checked_at,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _verdict(row)


async def load(pool: asyncpg.Pool, tenant_id: str, domain: str) -> StoredVerdict | None:
    """The stored verdict of one domain, or None if it was never checked."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM oltp.sender_compliance WHERE tenant_id = $1 AND domain = $2",
        tenant_id,
        domain.lower(),
    )
    return None if row is None else _verdict(row)


async def due(pool: asyncpg.Pool, max_age_s: float, *, limit: int = 1000) -> list[tuple[str, str]]:
    """(tenant, domain) of every sender domain never checked or checked over ``max_age_s`` ago."""
    rows = await pool.fetch(
        "SELECT s.tenant_id, s.domain FROM (SELECT DISTINCT tenant_id, domain FROM oltp.senders)"
        " s LEFT JOIN oltp.sender_compliance c ON c.tenant_id = s.tenant_id"
        " AND c.domain = s.domain"
        " WHERE c.checked_at IS NULL OR c.checked_at < now() - make_interval(secs => $1)"
        " ORDER BY c.checked_at NULLS FIRST LIMIT $2",
        max_age_s,
        limit,
    )
    return [(r["tenant_id"], r["domain"]) for r in rows]


async def new_in_blocked(pool: asyncpg.Pool) -> list[tuple[str, str, list[str]]]:
    """(tenant, address, reasons) of every sender address first used after its domain was
    blocked and not paused yet (older addresses were paused by the block itself; an operator may
    have resumed one of those on purpose, so they are left alone)."""
    rows = await pool.fetch(
        "SELECT s.tenant_id, s.address, c.reasons FROM oltp.senders s"
        " JOIN oltp.sender_compliance c ON c.tenant_id = s.tenant_id AND c.domain = s.domain"
        " WHERE c.action = 'block' AND NOT s.paused AND s.created_at > c.checked_at"
        " ORDER BY s.tenant_id, s.address"
    )
    return [(r["tenant_id"], r["address"], list(r["reasons"])) for r in rows]


async def tenants_with_domain(pool: asyncpg.Pool, domain: str) -> list[str]:
    """Tenants that have a sender address in ``domain``."""
    rows = await pool.fetch(
        "SELECT DISTINCT tenant_id FROM oltp.senders WHERE domain = $1 ORDER BY tenant_id",
        domain.lower(),
    )
    return [r["tenant_id"] for r in rows]


async def sender_addresses(pool: asyncpg.Pool, tenant_id: str, domain: str) -> list[str]:
    """Every sender address a tenant uses in ``domain``."""
    rows = await pool.fetch(
        "SELECT address FROM oltp.senders WHERE tenant_id = $1 AND domain = $2 ORDER BY address",
        tenant_id,
        domain.lower(),
    )
    return [r["address"] for r in rows]


async def rate_ceilings(pool: asyncpg.Pool) -> dict[tuple[str, str], float]:
    """(tenant, domain) → msg/s ceiling for every throttled domain, for the shaping layer."""
    rows = await pool.fetch(
        "SELECT tenant_id, domain, rate_ceiling_per_s FROM oltp.sender_compliance"
        " WHERE action = 'throttle' AND rate_ceiling_per_s IS NOT NULL"
    )
    return {(r["tenant_id"], r["domain"]): r["rate_ceiling_per_s"] for r in rows}


async def compliance_paused(
    pool: asyncpg.Pool, tenant_id: str, addresses: Sequence[str], prefix: str
) -> list[str]:
    """Which of these addresses are paused with a reason starting with ``prefix``."""
    rows = await pool.fetch(
        "SELECT address FROM oltp.senders WHERE tenant_id = $1 AND address = ANY($2::text[])"
        " AND paused AND starts_with(coalesce(paused_reason, ''), $3)",
        tenant_id,
        list(addresses),
        prefix,
    )
    return [r["address"] for r in rows]
