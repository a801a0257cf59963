"""``engine gdpr erase``: remove or pseudonymise one recipient's data in every tier, at once.

In one transaction (all or nothing):

1. the recipient's unfinished jobs are cancelled; every job keeps its row (the platform's
   "was this sent?" answer) with the recipient replaced by its pseudonym;
2. contents of those jobs that mention the address (body, subject, headers, attachments, raw
   parts — searched decoded, see :mod:`engine.gdpr.scan`) are deleted with their metadata and
   attachments, unless another recipient's unfinished job still needs them (those are counted in
   ``contents_kept_in_use``; run the erase again once they are sent); ``deep=True`` searches
   every content of the tenant, not only the recipient's;
3. raw inbound messages (bounces, complaints) linked to those jobs or mentioning the address are
   deleted;
4. the suppression becomes a permanent hashed one (``sha256:<hex>``, :mod:`engine.gdpr.pseudonym`)
   so the recipient is never mailed again;
5. a sweep then rewrites any remaining mention in every text, varchar, json, jsonb and text[]
   column of every table in the engine schemas (found in ``information_schema``, so tables added
   later — webhook deliveries, the audit log — are covered without changing this module);
6. the erasure is recorded in the audit log under the pseudonym, never the address.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence

import asyncpg
import msgspec

from engine import audit
from engine.errors import GdprError
from engine.gdpr import pseudonym as ps
from engine.gdpr import store
from engine.gdpr.scan import content_mentions, raw_mentions
from engine.store import content as content_store
from engine.store.pool import Conn, Tiers, transaction

log = logging.getLogger("engine.gdpr")

_BATCH = 500


class Erasure(msgspec.Struct, frozen=True, kw_only=True):
    """What one erasure did (counts only: the address itself is never echoed back)."""

    tenant_id: str
    pseudonym: str
    jobs: int
    jobs_cancelled: int
    contents_deleted: int
    contents_kept_in_use: int
    attachments_deleted: int
    inbound_deleted: int
    events: int
    suppressed: bool
    swept: dict[str, int]


async def _erase_contents(
    conn: Conn,
    pool: asyncpg.Pool,
    tenant_id: str,
    address: str,
    shas: Sequence[bytes],
    jobs_db: Conn | None = None,
) -> tuple[int, int, int]:
    """Delete contents (and their attachments) that mention the address; (deleted, kept, atts).
    ``jobs_db``: the queue tier's connection when content lives on another server."""
    mentioning: list[bytes] = []
    attachment_hashes: set[bytes] = set()
    for i in range(0, len(shas), _BATCH):
        keys = [(tenant_id, h) for h in shas[i : i + _BATCH]]
        for (_, sha), content in (await content_store.load(pool, keys)).items():
            if content_mentions(content, address):
                mentioning.append(sha)
                attachment_hashes.update(
                    hashlib.sha256(att.content).digest() for att in content.attachments
                )
    if not mentioning:
        return 0, 0, 0
    in_use = await store.contents_in_use(jobs_db or conn, tenant_id, mentioning, address)
    doomed = [h for h in mentioning if h not in in_use]
    deleted = await store.delete_contents(conn, tenant_id, doomed)
    atts = 0
    if attachment_hashes and doomed:
        atts = await store.delete_attachments(conn, tenant_id, list(attachment_hashes))
    return deleted, len(in_use), atts


async def _erase_inbound(conn: Conn, tenant_id: str, address: str, job_ids: list[int]) -> int:
    """Delete raw inbound messages of the recipient's jobs or mentioning the address."""
    deleted = await store.delete_inbound_of_jobs(conn, job_ids)
    after = 0
    while True:
        rows = await store.inbound_after(conn, tenant_id, after, _BATCH)
        if not rows:
            return deleted
        after = rows[-1]["id"]
        hits = [r["id"] for r in rows if raw_mentions(zlib.decompress(r["raw"]), address)]
        if hits:
            deleted += await store.delete_inbound(conn, hits)


async def _erase_content_tier(
    cconn: Conn,
    content: asyncpg.Pool,
    tenant_id: str,
    address: str,
    pseudonym: str,
    jobs: Sequence[asyncpg.Record],
    deep: bool,
    jobs_db: Conn,
) -> tuple[int, int, int, int, dict[str, int]]:
    """The content tier's part of an erasure on its own server: (deleted, kept, attachments,
    inbound, swept)."""
    if deep:
        shas = await store.tenant_contents(cconn, tenant_id)
    else:
        shas = list(dict.fromkeys(bytes(r["content_sha256"]) for r in jobs))
    deleted, kept, atts = await _erase_contents(
        cconn, content, tenant_id, address, shas, jobs_db=jobs_db
    )
    inbound = await _erase_inbound(cconn, tenant_id, address, [r["id"] for r in jobs])
    swept = await store.sweep(cconn, tenant_id, address, pseudonym, ["content"])
    return deleted, kept, atts, inbound, swept


async def erase(
    pool: asyncpg.Pool,
    tenant_id: str,
    address: str,
    *,
    actor: str,
    deep: bool = False,
    tiers: Tiers | None = None,
) -> Erasure:
    """Erase one recipient of one tenant in every tier (see the module docstring).

    ``tiers``: with the content tier on another server, its part (bodies, attachments, raw
    inbound messages, the sweep of its tables) runs in a transaction there that commits just
    before the one here: should this one then fail, the recipient is still found by address
    and the erasure can simply be run again."""
    address = ps.normalise(address)
    if "@" not in address:
        raise GdprError(f"{address!r} is not an email address")
    pseudonym = ps.pseudonym(address)
    try:
        async with pool.acquire() as conn, conn.transaction():
            jobs = await store.recipient_jobs(conn, tenant_id, address)
            job_ids = [r["id"] for r in jobs]
            cancelled = await store.cancel_and_pseudonymise(conn, tenant_id, job_ids, pseudonym)
            schemas: tuple[str, ...] = store.ENGINE_SCHEMAS
            if tiers is not None and tiers.content_apart:
                # The main server's content tables are empty and write-guarded (migration 141).
                schemas = tuple(s for s in schemas if s != "content")
                async with transaction(tiers.content) as cconn:
                    deleted, kept, atts, inbound, swept_content = await _erase_content_tier(
                        cconn, tiers.content, tenant_id, address, pseudonym, jobs, deep, conn
                    )
            else:
                if deep:
                    shas = await store.tenant_contents(conn, tenant_id)
                else:
                    shas = list(dict.fromkeys(bytes(r["content_sha256"]) for r in jobs))
                deleted, kept, atts = await _erase_contents(conn, pool, tenant_id, address, shas)
                inbound = await _erase_inbound(conn, tenant_id, address, job_ids)
                swept_content = {}
            events = await store.pseudonymise_events(conn, tenant_id, address, pseudonym)
            await store.suppress_pseudonym(conn, tenant_id, address, pseudonym)
            swept = await store.sweep(conn, tenant_id, address, pseudonym, schemas) | swept_content
            result = Erasure(
                tenant_id=tenant_id,
                pseudonym=pseudonym,
                jobs=len(job_ids),
                jobs_cancelled=cancelled,
                contents_deleted=deleted,
                contents_kept_in_use=kept,
                attachments_deleted=atts,
                inbound_deleted=inbound,
                events=events,
                suppressed=True,
                swept=swept,
            )
            detail = msgspec.to_builtins(result)
            detail.pop("pseudonym")
            await audit.record(conn, actor, "gdpr.erase", pseudonym, detail, tenant_id=tenant_id)
    except asyncpg.PostgresError as exc:
        raise GdprError(
            f"erasure for tenant {tenant_id} failed and was rolled back: {exc}",
            hint="nothing was changed; run it again",
        ) from None
    log.info("recipient erased", extra={"tenant": tenant_id, "pseudonym": pseudonym})
    return result
