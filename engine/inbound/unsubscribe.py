"""Unsubscribes the engine handles itself: RFC 8058 one-click POST and mailto, honoured at once.

A bulk job (one with a campaign) whose content brings no List-Unsubscribe gets one per recipient:
``mailto:u-<job>-<tag>@<verp_domain>`` (the inbound listener accepts it) and, when
``[inbound] unsubscribe_url`` is set, ``<unsubscribe_url>/u-<job>-<tag>`` with
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The tag is the same truncated HMAC as VERP
(prefix ``u``), so only the engine can mint a token and nobody can unsubscribe someone else.
Effect: the recipient is suppressed for the job's tenant, an ``unsubscribed`` event, the OLAP
``unsubscribed`` counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from engine import events
from engine.compose.unsubscribe import list_unsubscribe_headers
from engine.config import InboundConfig
from engine.inbound import verp_keys
from engine.store import facts, stats
from engine.store import suppressions as suppression_store

PREFIX = "u"


def token(job_id: int, cfg: InboundConfig) -> str:
    """The per-job token (the local part of the unsubscribe address), current secret."""
    return verp_keys.encode(job_id, cfg, local_prefix=PREFIX).rpartition("@")[0]


def job_of(address_or_token: str, cfg: InboundConfig, now: datetime | None = None) -> int | None:
    """The job an unsubscribe address or token belongs to; None when forged or not ours.

    Tokens signed with a previous secret ([[inbound.verp_previous]]) count until its window ends.
    """
    value = address_or_token if "@" in address_or_token else f"{address_or_token}@{cfg.verp_domain}"
    return verp_keys.decode(value, cfg, local_prefix=PREFIX, now=now)


def headers(job_id: int, cfg: InboundConfig) -> list[tuple[str, str]]:
    """List-Unsubscribe (+ List-Unsubscribe-Post when one-click is configured) for one job."""
    tok = token(job_id, cfg)
    https = f"{cfg.unsubscribe_url.rstrip('/')}/{tok}" if cfg.unsubscribe_url else None
    return list_unsubscribe_headers(https, f"{tok}@{cfg.verp_domain}")


_RETURNED = ("id", "tenant_id", "sender", "recipient", "message_id")


async def apply(pool: asyncpg.Pool, job_ids: Sequence[int], source: str) -> list[dict[str, Any]]:
    """Suppress the recipients of these jobs for their tenants, in one transaction.

    Returns the (job id, tenant, recipient) handled; unknown job ids are ignored.
    """
    if not job_ids:
        return []
    async with pool.acquire() as conn, conn.transaction():
        rows = [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, tenant_id, sender, recipient, message_id, campaign_id,"
                " coalesce(provider, '') AS provider, relayed_at FROM queue.jobs"
                " WHERE id = ANY($1::bigint[])",
                list(job_ids),
            )
        ]
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
        await stats.add(
            conn,
            [((r["tenant_id"], r["sender"], r["provider"]), "unsubscribed", 1) for r in rows],
        )
        await facts.add(
            conn,
            [
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
            ],
        )
    return [{k: r[k] for k in _RETURNED} for r in rows]
