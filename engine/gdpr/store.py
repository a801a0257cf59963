"""The statements of an erasure (:mod:`engine.gdpr.erase`), each run on the caller's
connection inside its one transaction."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from engine.gdpr import pseudonym as ps
from engine.store.pool import Conn

#: Schemas whose tables the sweep rewrites (the engine's tiers and its own schema).
ENGINE_SCHEMAS = ("queue", "content", "oltp", "olap", "engine")
_TEXT_TYPES = {"text": "text", "character varying": "text", "json": "json", "jsonb": "jsonb"}
#: Job states whose content is still needed to send.
UNFINISHED = ("queued", "deferred", "sending")


class TextColumn(msgspec.Struct, frozen=True):
    """A column that may hold a mention of an address."""

    table: str
    column: str
    kind: str  # text | json | jsonb | text[]
    has_tenant: bool


def _count(status: str) -> int:
    """The row count of a command status (``UPDATE 3`` -> 3)."""
    return int(status.split()[-1])


async def text_columns(
    conn: Conn | asyncpg.Pool, schemas: Sequence[str] = ENGINE_SCHEMAS
) -> list[TextColumn]:
    """Every text-like column of every table in ``schemas`` (what may hold a mention)."""
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
        list(schemas),
        list(_TEXT_TYPES),
    )
    return [
        TextColumn(
            table=f'"{r["table_schema"]}"."{r["table_name"]}"',
            column=f'"{r["column_name"]}"',
            kind="text[]" if r["data_type"] == "ARRAY" else _TEXT_TYPES[r["data_type"]],
            has_tenant=r["has_tenant"],
        )
        for r in rows
    ]


def _as_text(col: TextColumn) -> str:
    return col.column if col.kind == "text" else f"{col.column}::text"


async def sweep(
    conn: Conn,
    tenant_id: str,
    address: str,
    pseudonym: str,
    schemas: Sequence[str] = ENGINE_SCHEMAS,
) -> dict[str, int]:
    """Rewrite every remaining mention of the address in ``schemas``, table by table (one
    UPDATE each)."""
    by_table: dict[tuple[str, bool], list[TextColumn]] = {}
    for col in await text_columns(conn, schemas):
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
        # Rows of other tenants are left alone; rows not yet mapped to a tenant (NULL, or the
        # intake tenant '' of content.inbound_messages, e.g. a bounce that matched no job) and
        # engine-wide tables are swept too.
        scope = "(tenant_id = $4 OR tenant_id IS NULL OR tenant_id = '') AND " if has_tenant else ""
        args: list[str] = [regex, like, pseudonym] + ([tenant_id] if has_tenant else [])
        res: str = await conn.execute(
            f"UPDATE {table} SET {sets} WHERE {scope}({where})",  # names come from the catalog
            *args,
        )
        n = _count(res)
        if n:
            swept[table.replace('"', "")] = n
    return swept


async def recipient_jobs(conn: Conn, tenant_id: str, address: str) -> list[asyncpg.Record]:
    """id and content_sha256 of every job of the recipient (lower-cased ``address``)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, content_sha256 FROM queue.jobs WHERE tenant_id = $1 AND lower(recipient) = $2",
        tenant_id,
        address,
    )
    return rows


async def cancel_and_pseudonymise(
    conn: Conn, tenant_id: str, job_ids: list[int], pseudonym: str
) -> int:
    """Cancel the unsent ones of these jobs, then write the pseudonym as every one's recipient;
    returns how many were cancelled."""
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
    return _count(cancelled)


async def tenant_contents(conn: Conn, tenant_id: str) -> list[bytes]:
    """The SHA-256 of every stored content of the tenant (a deep erasure searches them all)."""
    rows = await conn.fetch(
        "SELECT sha256 FROM content.email_content WHERE tenant_id = $1", tenant_id
    )
    return [bytes(r["sha256"]) for r in rows]


async def contents_in_use(
    conn: Conn, tenant_id: str, shas: Sequence[bytes], address: str
) -> set[bytes]:
    """Which of these contents an unfinished job of another recipient still needs."""
    rows = await conn.fetch(
        "SELECT DISTINCT content_sha256 FROM queue.jobs WHERE tenant_id = $1"
        " AND content_sha256 = ANY($2::bytea[]) AND state = ANY($3::text[])"
        " AND lower(recipient) <> $4",
        tenant_id,
        list(shas),
        list(UNFINISHED),
        address,
    )
    return {bytes(r["content_sha256"]) for r in rows}


async def delete_contents(conn: Conn, tenant_id: str, shas: Sequence[bytes]) -> int:
    """Delete contents with their metadata; returns how many contents went."""
    await conn.execute(
        "DELETE FROM content.email_messages WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
        tenant_id,
        list(shas),
    )
    res: str = await conn.execute(
        "DELETE FROM content.email_content WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
        tenant_id,
        list(shas),
    )
    return _count(res)


async def delete_attachments(conn: Conn, tenant_id: str, shas: Sequence[bytes]) -> int:
    """Delete stored attachments by SHA-256; returns how many went."""
    done: str = await conn.execute(
        "DELETE FROM content.attachments WHERE tenant_id = $1 AND sha256 = ANY($2::bytea[])",
        tenant_id,
        list(shas),
    )
    return _count(done)


async def delete_inbound_of_jobs(conn: Conn, job_ids: list[int]) -> int:
    """Delete the raw inbound messages linked to these jobs."""
    res: str = await conn.execute(
        "DELETE FROM content.inbound_messages WHERE job_id = ANY($1::bigint[])"
        " OR verp_job_id = ANY($1::bigint[])",
        job_ids,
    )
    return _count(res)


async def inbound_after(conn: Conn, tenant_id: str, after: int, limit: int) -> list[asyncpg.Record]:
    """id and compressed raw of the tenant's (or not yet mapped) inbound messages past ``after``."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, raw FROM content.inbound_messages WHERE id > $1"
        " AND (tenant_id = $2 OR tenant_id = '') ORDER BY id LIMIT $3",
        after,
        tenant_id,
        limit,
    )
    return rows


async def delete_inbound(conn: Conn, ids: list[int]) -> int:
    """Delete these raw inbound messages."""
    done: str = await conn.execute(
        "DELETE FROM content.inbound_messages WHERE id = ANY($1::bigint[])", ids
    )
    return _count(done)


async def pseudonymise_events(conn: Conn, tenant_id: str, address: str, pseudonym: str) -> int:
    """Replace the recipient of the tenant's events; returns how many."""
    events: str = await conn.execute(
        "UPDATE oltp.events SET recipient = $3 WHERE tenant_id = $1 AND lower(recipient) = $2",
        tenant_id,
        address,
        pseudonym,
    )
    return _count(events)


async def suppress_pseudonym(conn: Conn, tenant_id: str, address: str, pseudonym: str) -> None:
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
