"""The sending domains ``engine nodes check`` probes (oltp tier, ``oltp.senders``)."""

from __future__ import annotations

import asyncpg
import msgspec


class SendingDomain(msgspec.Struct, frozen=True):
    """One sender domain and an address of it; ``tenant_id`` None when it comes from config."""

    domain: str
    address: str
    tenant_id: str | None = None


async def sending_domains(pool: asyncpg.Pool, limit: int) -> tuple[list[SendingDomain], int]:
    """Up to ``limit`` sender domains (one address each, first tenant by name), and how many
    distinct domains there are in all.

    One probe per domain, not per tenant: MailU's sender checks look at the address.
    """
    rows = await pool.fetch(
        "SELECT DISTINCT ON (domain) domain, address, tenant_id FROM oltp.senders"
        " ORDER BY domain, tenant_id, address LIMIT $1",
        limit,
    )
    total = await pool.fetchval("SELECT count(DISTINCT domain) FROM oltp.senders")
    return [SendingDomain(r["domain"], r["address"], r["tenant_id"]) for r in rows], int(total)
