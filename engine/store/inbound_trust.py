"""SQL of inbound trust: replay protection and matching a redacted complaint to its job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


async def claim(conn: Any, keys: Sequence[tuple[str, int, str, int]]) -> set[tuple[int, str]]:
    """Record ``(tenant, job id, class, inbound id)`` as counted; returns the (job, class) pairs
    that were new. Call inside the transaction that applies their effects: a rollback
    un-claims."""
    if not keys:
        return set()
    rows = await conn.fetch(
        "INSERT INTO oltp.inbound_counted (tenant_id, job_id, class, inbound_id)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])"
        " ON CONFLICT DO NOTHING RETURNING job_id, class",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
    )
    return {(r["job_id"], r["class"]) for r in rows}


async def job_by_feedback_id(
    conn: Any, tenant_id: str, sender_domain: str, campaign_id: str | None, recipient: str
) -> int | None:
    """The latest job of ``tenant_id`` to ``recipient`` from ``sender_domain`` (and campaign):
    what a complaint about a redacted original names through our Feedback-ID header."""
    job_id: int | None = await conn.fetchval(
        "SELECT id FROM queue.jobs WHERE tenant_id = $1 AND recipient = ANY($2::text[])"
        " AND lower(split_part(sender, '@', 2)) = $3"
        " AND ($4::text IS NULL OR campaign_id = $4)"
        " ORDER BY id DESC LIMIT 1",
        tenant_id,
        list(dict.fromkeys((recipient, recipient.lower()))),
        sender_domain.lower(),
        campaign_id,
    )
    return job_id
