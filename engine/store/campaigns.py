"""Content tier: campaign templates, one row per tenant x campaign x version (migration 130).

A version is never changed once stored; a new ``PUT`` stores the next version, and jobs keep the
version that was current when they were enqueued (``queue.jobs.template_version``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import msgspec

from engine.store.pool import Conn


class StoredTemplate(msgspec.Struct, frozen=True):
    """One stored version of a campaign's template."""

    tenant_id: str
    campaign_id: str
    version: int
    subject: str
    text: str | None
    html: str | None
    required: list[str]
    created_at: dt.datetime


def _row(r: asyncpg.Record) -> StoredTemplate:
    return StoredTemplate(
        r["tenant_id"],
        r["campaign_id"],
        r["version"],
        r["subject"],
        r["text_body"],
        r["html_body"],
        list(r["required"]),
        r["created_at"],
    )


_COLUMNS = "tenant_id, campaign_id, version, subject, text_body, html_body, required, created_at"


async def put(
    conn: Conn | asyncpg.Pool,
    tenant_id: str,
    campaign_id: str,
    *,
    subject: str,
    text: str | None,
    html: str | None,
    required: Sequence[str],
) -> StoredTemplate:
    """Store the next version of a campaign's template (the first is 1).

    Concurrent writers of one campaign serialise on a transaction-scoped advisory lock, so two
    PUTs get two versions rather than a unique-key error.
    """
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held:
            return await put(
                held,
                tenant_id,
                campaign_id,
                subject=subject,
                text=text,
                html=html,
                required=required,
            )
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 130))",
            tenant_id,
            campaign_id,
        )
        row = await conn.fetchrow(
            "INSERT INTO content.campaign_templates"
            " (tenant_id, campaign_id, version, subject, text_body, html_body, required)"
            " SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6"
            "   FROM content.campaign_templates WHERE tenant_id = $1 AND campaign_id = $2"
            f" RETURNING {_COLUMNS}",
            tenant_id,
            campaign_id,
            subject,
            text,
            html,
            list(required),
        )
    assert row is not None  # INSERT ... SELECT of an aggregate always yields one row
    return _row(row)


async def current(
    conn: Conn | asyncpg.Pool, tenant_id: str, campaign_id: str
) -> StoredTemplate | None:
    """The latest version of a campaign's template (None: no template stored)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM content.campaign_templates"
        " WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY version DESC LIMIT 1",
        tenant_id,
        campaign_id,
    )
    return None if row is None else _row(row)


async def current_many(
    conn: Conn | asyncpg.Pool, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(version, required variable names) of the latest version of each (tenant, campaign)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (c.tenant_id, c.campaign_id) c.tenant_id, c.campaign_id, c.version,"
        " c.required FROM content.campaign_templates c"
        " JOIN unnest($1::text[], $2::text[]) AS k(t, c) ON c.tenant_id = k.t"
        " AND c.campaign_id = k.c ORDER BY c.tenant_id, c.campaign_id, c.version DESC",
        [k[0] for k in wanted],
        [k[1] for k in wanted],
    )
    return {(r["tenant_id"], r["campaign_id"]): (r["version"], list(r["required"])) for r in rows}


async def job_template(
    conn: Conn | asyncpg.Pool, job_id: int, tenant_id: str
) -> tuple[str, int, dict[str, Any]] | None:
    """A templated job's (campaign id, template version, variables); None for another job."""
    row = await conn.fetchrow(
        "SELECT campaign_id, template_version, variables FROM queue.jobs"
        " WHERE id = $1 AND tenant_id = $2 AND template_version IS NOT NULL",
        job_id,
        tenant_id,
    )
    if row is None:
        return None
    return row["campaign_id"], row["template_version"], row["variables"] or {}


async def load(
    conn: Conn | asyncpg.Pool, keys: Iterable[tuple[str, str, int]]
) -> dict[tuple[str, str, int], StoredTemplate]:
    """The given versions, by (tenant, campaign, version): one query whatever the count."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await conn.fetch(
        f"SELECT {', '.join('c.' + c for c in _COLUMNS.split(', '))}"
        " FROM content.campaign_templates c"
        " JOIN unnest($1::text[], $2::text[], $3::int[]) AS k(t, c, v)"
        " ON c.tenant_id = k.t AND c.campaign_id = k.c AND c.version = k.v",
        [k[0] for k in wanted],
        [k[1] for k in wanted],
        [k[2] for k in wanted],
    )
    return {(r["tenant_id"], r["campaign_id"], r["version"]): _row(r) for r in rows}
