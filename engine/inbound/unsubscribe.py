"""Unsubscribes the engine handles itself: RFC 8058 one-click POST and mailto, honoured at once.

The addresses and tokens are made and checked in :mod:`engine.compose.unsubscribe`.
Effect: the recipient is suppressed for the job's tenant, an ``unsubscribed`` event, the OLAP
``unsubscribed`` counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from engine import events
from engine.store import facts, stats
from engine.store import inbound_effects as effects_store
from engine.store import olap_outbox as outbox
from engine.store import suppressions as suppression_store

_RETURNED = ("id", "tenant_id", "sender", "recipient", "message_id")


async def apply(
    pool: asyncpg.Pool, job_ids: Sequence[int], source: str, *, olap_outbox: bool = False
) -> list[dict[str, Any]]:
    """Suppress the recipients of these jobs for their tenants, in one transaction.

    Returns the (job id, tenant, recipient) handled; unknown job ids are ignored.
    ``olap_outbox``: the olap tier is on another server (counts go to the outbox).
    """
    if not job_ids:
        return []
    async with pool.acquire() as conn, conn.transaction():
        rows = await effects_store.jobs_by_id(conn, job_ids)
        await suppression_store.add(
            conn, [(r["tenant_id"], r["recipient"], "unsubscribed", source, None) for r in rows]
        )
        await events.write(
            conn,
            [
                events.Event(
                    tenant_id=r["tenant_id"],
                    kind=events.EventKind.UNSUBSCRIBED.value,
                    job_id=r["id"],
                    message_id=r["message_id"],
                    recipient=r["recipient"],
                    reason=source,
                )
                for r in rows
            ],
        )
        counts = [((r["tenant_id"], r["sender"], r["provider"]), "unsubscribed", 1) for r in rows]
        found = [
            facts.Fact(
                r["tenant_id"],
                facts.day_of(r["relayed_at"]),
                r["campaign_id"] or "",
                r["sender"],
                r["provider"],
                "unsubscribed",
                source,
            )
            for r in rows
        ]
        if olap_outbox:
            await outbox.put(conn, counts, found)
        else:
            await stats.add(conn, counts)
            await facts.add(conn, found)
    return [{k: r[k] for k in _RETURNED} for r in rows]
