"""Row-level security: a tenant role sees and changes only its own rows.

The engine role owns the tables and so bypasses RLS; platform services ``SET ROLE engine_tenant``
and set ``engine.tenant_id``. These tests run as that non-owner role: tenant A cannot read or
cancel B's jobs, nor read, add or remove B's suppressions, events, stats, senders or content.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from engine.enqueue import enqueue
from engine.store import tenants

TENANT_SCHEMAS = ("queue", "content", "oltp", "olap")


def _job(tenant: str, i: int) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": tenant,
            "idempotency_key": f"{tenant}-{i}",
            "from": f"news@{tenant.lower()}.example",
            "to": f"user{i}@example.com",
            "subject": f"for {tenant}",
            "text": "hello",
        }
    )


@pytest.fixture
async def two_tenants(pool: asyncpg.Pool) -> dict[str, list[int]]:
    """Tenants A and B with jobs, suppressions, events, stats and an inbound message each."""
    ids: dict[str, list[int]] = {}
    for tenant in ("A", "B"):
        await tenants.add(pool, tenant)
        res = await enqueue(
            pool, [_job(tenant, i) for i in range(3)], max_message_bytes=10**6, max_age_s=3600
        )
        ids[tenant] = [r.job_id for r in res if r.job_id is not None]
        await pool.execute(
            "INSERT INTO oltp.suppressions (tenant_id, address, reason, source)"
            " VALUES ($1, $2, 'userunknown', 'bounce')",
            tenant,
            f"gone-{tenant}@example.com",
        )
        await pool.execute(
            "INSERT INTO oltp.events (tenant_id, job_id, kind, recipient)"
            " VALUES ($1, $2, 'bounced', 'user0@example.com')",
            tenant,
            ids[tenant][0],
        )
        await pool.execute(
            "INSERT INTO olap.daily_stats (tenant_id, day, sent, relayed) VALUES ($1, now(), 5, 4)",
            tenant,
        )
        await pool.execute(
            "INSERT INTO content.inbound_messages (tenant_id, size, raw) VALUES ($1, 1, 'x')",
            tenant,
        )
    return ids


@contextlib.asynccontextmanager
async def as_tenant(pool: asyncpg.Pool, tenant: str | None) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as ``engine_tenant`` in tenant context ``tenant`` (None: none, "": forged).

    The context is set by trusted code (``engine.set_tenant``, before the role drops to
    ``engine_tenant``); an empty string stands for a caller setting the GUC itself.
    """
    async with pool.acquire() as conn, conn.transaction():
        if tenant:
            await conn.execute("SELECT engine.set_tenant($1)", tenant)
        elif tenant == "":
            await conn.execute("SELECT set_config('engine.tenant_id', 'A', true)")
        await conn.execute("SET LOCAL ROLE engine_tenant")
        yield conn


async def _tenant_tables(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT format('%I.%I', c.table_schema, c.table_name) AS t"
        " FROM information_schema.columns c JOIN information_schema.tables t"
        "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'"
        "   AND c.table_schema = ANY($1::text[]) ORDER BY 1",
        list(TENANT_SCHEMAS),
    )
    return [r["t"] for r in rows]


async def test_every_tenant_table_has_row_level_security(pool: asyncpg.Pool) -> None:
    tables = await _tenant_tables(pool)
    assert "queue.jobs" in tables and "oltp.suppressions" in tables
    missing = []
    for table in tables:
        row = await pool.fetchrow(
            "SELECT c.relrowsecurity, p.qual FROM pg_class c"
            " LEFT JOIN pg_policies p ON format('%I.%I', p.schemaname, p.tablename) = $1"
            "   AND p.policyname = 'tenant_isolation'"
            " WHERE c.oid = $1::regclass",
            table,
        )
        if not (row["relrowsecurity"] and row["qual"] and "current_tenant()" in row["qual"]):
            missing.append(table)
    assert not missing, f"tenant tables without the tenant_isolation policy: {missing}"
    role = await pool.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'engine_tenant'"
    )
    assert role is not None and not role["rolsuper"] and not role["rolbypassrls"]
    assert not role["rolcanlogin"], "engine_tenant is only reached with SET ROLE"


async def test_a_tenant_reads_only_its_own_rows(
    pool: asyncpg.Pool, two_tenants: dict[str, list[int]]
) -> None:
    populated = {
        "queue.jobs",
        "oltp.suppressions",
        "oltp.events",
        "olap.daily_stats",
        "oltp.senders",
        "oltp.tenants",
        "content.email_content",
        "content.email_messages",
        "content.inbound_messages",
    }
    for table in await _tenant_tables(pool):
        for tenant, expected in (("A", {"A"}), ("B", {"B"}), (None, set()), ("", set())):
            try:
                async with as_tenant(pool, tenant) as conn:
                    rows = await conn.fetch(f"SELECT DISTINCT tenant_id FROM {table}")
            except asyncpg.InsufficientPrivilegeError:
                continue  # not readable by tenants at all (e.g. secrets): nothing leaks
            seen = {r["tenant_id"] for r in rows}
            if table in populated:
                assert seen == expected, f"{table} as {tenant!r}: {seen}"
            else:
                assert seen <= expected, f"{table} as {tenant!r}: {seen}"
    async with as_tenant(pool, "A") as conn:
        b_job = two_tenants["B"][0]
        assert await conn.fetchval("SELECT count(*) FROM queue.jobs WHERE id = $1", b_job) == 0
        assert await conn.fetchval("SELECT count(*) FROM queue.jobs") == 3
        # No tenant_id trick widens the filter: it is compared, never interpreted.
        await conn.execute("SELECT set_config('engine.tenant_id', $1, true)", "A' OR '1'='1")
        assert await conn.fetchval("SELECT count(*) FROM queue.jobs") == 0


async def test_a_tenant_cannot_cancel_or_alter_another_tenants_jobs(
    pool: asyncpg.Pool, two_tenants: dict[str, list[int]]
) -> None:
    b_job = two_tenants["B"][0]
    async with as_tenant(pool, "A") as conn:
        res = await conn.execute(
            "UPDATE queue.jobs SET state = 'cancelled', finished_at = now() WHERE id = $1", b_job
        )
        assert res == "UPDATE 0"
        res = await conn.execute("UPDATE queue.jobs SET state = 'cancelled', finished_at = now()")
        assert res == "UPDATE 3", "a blanket cancel touches the tenant's own jobs only"
    states = dict(
        await pool.fetch(
            "SELECT tenant_id, array_agg(DISTINCT state) FROM queue.jobs GROUP BY tenant_id"
        )
    )
    assert states == {"A": ["cancelled"], "B": ["queued"]}
    for statement in (
        "UPDATE queue.jobs SET tenant_id = 'B'",  # moving a row to another tenant
        "UPDATE queue.jobs SET recipient = 'x@evil.example'",
        "UPDATE queue.jobs SET lease_owner = 'me', next_attempt_at = now()",
        "DELETE FROM queue.jobs",
        "INSERT INTO queue.jobs (tenant_id, idempotency_key, sender, recipient, content_sha256,"
        " expires_at) VALUES ('B', 'x', 'a@b.c', 'd@e.f', '\\x00', now())",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with as_tenant(pool, "A") as conn:
                await conn.execute(statement)


async def test_a_tenant_cannot_read_add_or_lift_another_tenants_suppressions(
    pool: asyncpg.Pool, two_tenants: dict[str, list[int]]
) -> None:
    async with as_tenant(pool, "A") as conn:
        assert await conn.execute("DELETE FROM oltp.suppressions WHERE tenant_id = 'B'") == (
            "DELETE 0"
        )
        assert await conn.execute("DELETE FROM oltp.suppressions") == "DELETE 1"
        await conn.execute(
            "INSERT INTO oltp.suppressions (tenant_id, address, reason, source)"
            " VALUES ('A', 'new@example.com', 'manual', 'operator')"
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with as_tenant(pool, "A") as conn:
            await conn.execute(
                "INSERT INTO oltp.suppressions (tenant_id, address, reason, source)"
                " VALUES ('B', 'planted@example.com', 'manual', 'operator')"
            )
    rows = await pool.fetch("SELECT tenant_id, address FROM oltp.suppressions ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [("A", "new@example.com"), ("B", "gone-B@example.com")]


async def test_events_and_stats_are_read_only_and_private(
    pool: asyncpg.Pool, two_tenants: dict[str, list[int]]
) -> None:
    for statement in (
        "UPDATE olap.daily_stats SET sent = 0",
        "DELETE FROM olap.daily_stats",
        "INSERT INTO olap.daily_stats (tenant_id, day) VALUES ('B', now())",
        "UPDATE oltp.events SET kind = 'delivered'",
        "DELETE FROM oltp.events",
        "UPDATE oltp.senders SET paused = true",
        "UPDATE oltp.tenants SET name = 'pwned'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with as_tenant(pool, "A") as conn:
                await conn.execute(statement)
    async with as_tenant(pool, "A") as conn:
        sent = await conn.fetchval("SELECT sum(sent) FROM olap.daily_stats")
        assert sent == 5, "A's own stats only (B's 5 are not added)"


async def test_a_tenant_role_cannot_enqueue_for_anyone(
    pool: asyncpg.Pool, two_tenants: dict[str, list[int]]
) -> None:
    """A tenant-scoped session enqueues for its own tenant at most (engine.enqueue checks the
    tenant of each job against the verified context); without a context, for nobody."""
    async with as_tenant(pool, "A") as conn:
        (row,) = await conn.fetch(
            "SELECT * FROM engine.enqueue($1::jsonb)", orjson.loads(_job("B", 99))
        )
    assert row["job_id"] is None and "may not enqueue" in row["error"]
    for forged in (None, ""):
        async with as_tenant(pool, forged) as conn:
            (row,) = await conn.fetch(
                "SELECT * FROM engine.enqueue($1::jsonb)", orjson.loads(_job("A", 98))
            )
        assert row["job_id"] is None and "may not enqueue" in row["error"]
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs WHERE tenant_id = 'B'") == 3
