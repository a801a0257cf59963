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
from engine.gdpr.scan import content_mentions, raw_mentions
from engine.store import content as content_store
from engine.store.pool import Conn

log = logging.getLogger("engine.gdpr")

#: Schemas whose tables the sweep rewrites (the engine's tiers and its own schema).
ENGINE_SCHEMAS = ("queue", "content", "oltp", "olap", "engine")
_TEXT_TYPES = {"text": "text", "character varying": "text", "json": "json", "jsonb": "jsonb"}
_UNFINISHED = ("queued", "deferred", "sending")
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


class _Column(msgspec.Struct, frozen=True):
    table: str
    column: str
    kind: str  # text | json | jsonb | text[]
    has_tenant: bool


async def text_columns(conn: Conn | asyncpg.Pool) -> list[_Column]:
    """Every text-like column of every table in :data:`ENGINE_SCHEMAS` (what may hold a mention)."""
    rows = await conn.fetch(
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.udt_name,"
        " EXISTS (SELECT 1 FROM information_schema.columns t WHERE t.table_schema = c.table_schema"
        "  AND t.table_name = c.table_name AND t.column_name = 'tenant_id') AS has_tenant"
        " FROM information_schema.columns c JOIN information_schema.tables tb"
        " ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name"
        " WHERE c.table_schema = ANY($1::text[]) AND tb.table_type = 'BASE TABLE'"
        " AND (c.data_type = ANY($2::text[]) OR (c.data_type = 'ARRAY' AND c.udt_name = '_text'))"
        " AND c.is_generated = 'NEVER'"
        " ORDER BY 1, 2, 3",
        list(ENGINE_SCHEMAS),
        list(_TEXT_TYPES),
    )
    return [
        _Column(
            table=f'"{r["table_schema"]}"."{r["table_name"]}"',
            column=f'"{r["column_name"]}"',
            kind="text[]" if r["data_type"] == "ARRAY" else _TEXT_TYPES[r["data_type"]],
            has_tenant=r["has_tenant"],
        )
        for r in rows
    ]


def _as_text(col: _Column) -> str:
    return col.column if col.kind == "text" else f"{col.column}::text"


async def _sweep(conn: Conn, tenant_id: str, address: str, pseudonym: str) -> dict[str, int]:
    """Rewrite every remaining mention of the address, table by table (one UPDATE each)."""
    by_table: dict[tuple[str, bool], list[_Column]] = {}
    for col in await text_columns(conn):
        by_table.setdefault((col.table, col.has_tenant), []).append(col)
    regex, like = ps.sql_regex(address), ps.like_pattern(address)
    swept: dict[str, int] = {}
    for (table, has_tenant), cols in by_table.items():
        sets = ", ".join(
            f"{c.column} = CASE WHEN {_as_text(c)} ILIKE $2 THEN"
            f" regexp_replace({_as_text(c)}, $1, $3, 'gi')::{c.kind} ELSE {c.column} END"
            for c in cols
        )
        where = " OR ".join(f"{_as_text(c)} ILIKE $2" for c in cols)
        # Rows of other tenants are left alone; rows not yet mapped to a tenant (NULL, e.g. a
        # bounce that matched no job) and engine-wide tables are swept too.
        scope = "(tenant_id = $4 OR tenant_id IS NULL) AND " if has_tenant else ""
        args: list[str] = [regex, like, pseudonym] + ([tenant_id] if has_tenant else [])
        res: str = await conn.execute(
            f"UPDATE {table} SET {sets} WHERE {scope}({where})",  # names come from the catalog
            *args,
        )
        n = int(res.split()[-1])
        if n:
            swept[table.replace('"', "")] = n
    return swept


async def _erase_contents(
    conn: Conn, pool: asyncpg.Pool, tenant_id: str, address: str, shas: Sequence[bytes]
) -> tuple[int, int, int]:
    """Delete contents (and their attachments) that mention the address; (deleted, kept, atts)."""
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
    in_use = {
        bytes(r["content_sha256"])
        for r in await conn.fetch(
            "SELECT DISTINCT content_sha256 FROM queue.jobs WHERE tenant_id = $1"
            " AND content_sha256 = ANY($2::bytea[]) AND state = ANY($3::text[])"
            " AND lower(recipient) <> $4",
            tenant_id,
            mentioning,
            list(_UNFINISHED),
            address,
        )
    }
    doomed = [h for h in mentioning if h not in in_use]
    await conn.execute(
        "DELETE FROM content.email_messages WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
        tenant_id,
        doomed,
    )
    res: str = await conn.execute(
        "DELETE FROM content.email_content WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
        tenant_id,
        doomed,
    )
    atts = 0
    if attachment_hashes and doomed:
        done: str = await conn.execute(
            "DELETE FROM content.attachments WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
            tenant_id,
            list(attachment_hashes),
        )
        atts = int(done.split()[-1])
    return int(res.split()[-1]), len(in_use), atts


async def _erase_inbound(conn: Conn, tenant_id: str, address: str, job_ids: list[int]) -> int:
    """Delete raw inbound messages of the recipient's jobs or mentioning the address."""
    res: str = await conn.execute(
        "DELETE FROM content.inbound_messages WHERE job_id = ANY($1::bigint[])"
        " OR verp_job_id = ANY($1::bigint[])",
        job_ids,
    )
    deleted = int(res.split()[-1])
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT id, raw FROM content.inbound_messages WHERE id > $1"
            " AND (tenant_id = $2 OR tenant_id IS NULL) ORDER BY id LIMIT $3",
            after,
            tenant_id,
            _BATCH,
        )
        if not rows:
            return deleted
        after = rows[-1]["id"]
        hits = [r["id"] for r in rows if raw_mentions(zlib.decompress(r["raw"]), address)]
        if hits:
            done: str = await conn.execute(
                "DELETE FROM content.inbound_messages WHERE id = ANY($1::bigint[])", hits
            )
            deleted += int(done.split()[-1])


async def _suppress(conn: Conn, tenant_id: str, address: str, pseudonym: str) -> None:
    """Swap a clear suppression (if any) for a permanent hashed one, keeping its reason."""
    old = await conn.fetchrow(
        "DELETE FROM oltp.suppressions WHERE tenant_id = $1 AND address = $2"
        " RETURNING reason, source",
        tenant_id,
        address,
    )
    await conn.execute(
        "INSERT INTO oltp.suppressions (tenant_id, address, reason, source, expires_at)"
        " VALUES ($1, $2, $3, 'gdpr', NULL) ON CONFLICT (tenant_id, address)"
        " DO UPDATE SET expires_at = NULL, source = 'gdpr'",
        tenant_id,
        pseudonym,
        "erased" if old is None else f"erased (was {old['source']}: {old['reason']})",
    )


async def erase(
    pool: asyncpg.Pool, tenant_id: str, address: str, *, actor: str, deep: bool = False
) -> Erasure:
    """Erase one recipient of one tenant in every tier (see the module docstring)."""
    address = ps.normalise(address)
    if "@" not in address:
        raise GdprError(f"{address!r} is not an email address")
    pseudonym = ps.pseudonym(address)
    try:
        async with pool.acquire() as conn, conn.transaction():
            jobs = await conn.fetch(
                "SELECT id, content_sha256 FROM queue.jobs"
                " WHERE tenant_id = $1 AND lower(recipient) = $2",
                tenant_id,
                address,
            )
            job_ids = [r["id"] for r in jobs]
            cancelled: str = await conn.execute(
                "UPDATE queue.jobs SET state = 'cancelled', finished_at = now(),"
                " updated_at = now(), last_reply = 'cancelled: recipient erased (GDPR)'"
                " WHERE tenant_id = $1 AND id = ANY($2::bigint[])"
                " AND state IN ('queued', 'deferred')",
                tenant_id,
                job_ids,
            )
            await conn.execute(
                # A templated job's variables are this recipient's data (name, fields).
                "UPDATE queue.jobs SET recipient = $3, variables = NULL, updated_at = now()"
                " WHERE tenant_id = $1 AND id = ANY($2::bigint[])",
                tenant_id,
                job_ids,
                pseudonym,
            )
            if deep:
                shas = [
                    bytes(r["sha256"])
                    for r in await conn.fetch(
                        "SELECT sha256 FROM content.email_content WHERE tenant_id = $1", tenant_id
                    )
                ]
            else:
                shas = list(dict.fromkeys(bytes(r["content_sha256"]) for r in jobs))
            deleted, kept, atts = await _erase_contents(conn, pool, tenant_id, address, shas)
            inbound = await _erase_inbound(conn, tenant_id, address, job_ids)
            events: str = await conn.execute(
                "UPDATE oltp.events SET recipient = $3 WHERE tenant_id = $1"
                " AND lower(recipient) = $2",
                tenant_id,
                address,
                pseudonym,
            )
            await _suppress(conn, tenant_id, address, pseudonym)
            swept = await _sweep(conn, tenant_id, address, pseudonym)
            result = Erasure(
                tenant_id=tenant_id,
                pseudonym=pseudonym,
                jobs=len(job_ids),
                jobs_cancelled=int(cancelled.split()[-1]),
                contents_deleted=deleted,
                contents_kept_in_use=kept,
                attachments_deleted=atts,
                inbound_deleted=inbound,
                events=int(events.split()[-1]),
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
