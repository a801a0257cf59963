"""The database enforces tenant isolation: non-owner roles under FORCE ROW LEVEL SECURITY.

``engine_api`` without a tenant context sees nothing in any tenant table; with the context set by
``engine.set_tenant`` (trusted code only) it sees one tenant; a caller setting the GUC itself
gets no context. A platform login role (member of ``engine_platform``) can enqueue through
``engine.enqueue(jsonb)`` only for the tenants granted to it and can read no table. The daemon's
role ``engine_worker`` sends across tenants (the rest of the suite can run as it:
``PM_TEST_DB_ROLE=engine_worker``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from engine.config import Config
from engine.enqueue import enqueue
from engine.store import pool as pool_mod
from engine.store import tenants
from engine.tenancy import domains

SCHEMAS = ["queue", "content", "oltp", "olap"]


def job(tenant: str, i: int) -> dict[str, object]:
    return {
        "tenant_id": tenant,
        "idempotency_key": f"{tenant}-{i}",
        "from": f"news@{tenant.lower()}.example",
        "to": f"user{i}@example.com",
        "subject": "hi",
        "text": "hello",
    }


@pytest.fixture
async def data(pool: asyncpg.Pool) -> None:
    for t in ("A", "B"):
        await tenants.add(pool, t)
        await domains.add(pool, t, f"{t.lower()}.example", verified=True)
        res = await enqueue(
            pool,
            [orjson.dumps(job(t, i)) for i in range(2)],
            max_message_bytes=1 << 20,
            max_age_s=3600,
        )
        assert all(r.error is None for r in res)


async def tenant_tables(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT format('%I.%I', c.table_schema, c.table_name) AS t"
        " FROM information_schema.columns c JOIN information_schema.tables x"
        "   ON x.table_schema = c.table_schema AND x.table_name = c.table_name"
        " WHERE c.column_name = 'tenant_id' AND x.table_type = 'BASE TABLE'"
        "   AND c.table_schema = ANY($1::text[]) ORDER BY 1",
        SCHEMAS,
    )
    return [r["t"] for r in rows]


async def test_every_tenant_table_is_forced_with_the_verified_context(pool: asyncpg.Pool) -> None:
    tables = await tenant_tables(pool)
    assert "oltp.sending_domains" in tables and "queue.jobs" in tables
    for t in tables:
        row = await pool.fetchrow(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass", t
        )
        assert row is not None and row["relrowsecurity"] and row["relforcerowsecurity"], t
    for role in ("engine_worker", "engine_api", "engine_platform"):
        r = await pool.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1", role
        )
        assert r is not None and not (r["rolsuper"] or r["rolbypassrls"] or r["rolcanlogin"])


@contextlib.asynccontextmanager
async def as_api(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE engine_api")
        yield conn


async def test_no_tenant_context_sees_nothing(pool: asyncpg.Pool, data: None) -> None:
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 4  # the rows are there
    for t in await tenant_tables(pool):
        async with as_api(pool) as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0, t
        async with as_api(pool) as conn:  # a forged context is no context
            await conn.execute("SELECT set_config('engine.tenant_id', 'A', true)")
            await conn.execute("SELECT set_config('engine.tenant_mac', repeat('0', 64), true)")
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0, t


async def test_a_set_context_sees_and_writes_one_tenant(pool: asyncpg.Pool, data: None) -> None:
    async with tenants.scoped(pool, "A") as conn:
        assert {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM queue.jobs")} == {
            "A"
        }
        assert await conn.fetchval("SELECT engine.current_tenant()") == "A"
        # B's rows cannot be changed, nor rows written for B
        assert await conn.execute("UPDATE queue.jobs SET priority = 2 WHERE tenant_id = 'B'") == (
            "UPDATE 0"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO oltp.suppressions (tenant_id, address, reason, source)"
                " VALUES ('B', 'x@example.com', 'manual', 'api')"
            )
    async with tenants.scoped(pool, "A") as conn:
        # the context is the transaction's: a MAC copied into another transaction is void
        mac = await conn.fetchval("SELECT current_setting('engine.tenant_mac')")
    async with as_api(pool) as conn:
        await conn.execute("SELECT set_config('engine.tenant_id', 'A', true)")
        await conn.execute("SELECT set_config('engine.tenant_mac', $1, true)", mac)
        assert await conn.fetchval("SELECT engine.current_tenant()") is None
        assert await conn.fetchval("SELECT count(*) FROM queue.jobs") == 0


async def test_the_secret_and_the_mac_function_are_out_of_reach(
    pool: asyncpg.Pool, data: None
) -> None:
    for sql in ("SELECT * FROM engine.secrets", "SELECT engine.tenant_mac('A')"):
        for role in ("engine_api", "engine_worker", "engine_platform", "engine_tenant"):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(sql)
    for role in ("engine_platform", "engine_tenant"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT engine.set_tenant('A')")


@pytest.fixture
async def platform_login(cfg: Config, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A throwaway login role in engine_platform (roles are cluster-wide: unique, dropped)."""
    name = f"pm_platform_{uuid.uuid4().hex[:12]}"
    await pool.execute(f"CREATE ROLE {name} LOGIN")
    await pool.execute(f"GRANT engine_platform TO {name}")
    try:
        yield name
    finally:
        await pool.execute(f"DROP ROLE IF EXISTS {name}")


def dsn_as(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def test_platform_role_enqueues_only_for_its_tenants(
    cfg: Config, pool: asyncpg.Pool, data: None, platform_login: str
) -> None:
    assert await tenants.grant_platform(pool, platform_login, "A")
    conn = await pool_mod.connect_one(dsn_as(cfg.database.dsn, platform_login))
    try:
        rows = await conn.fetch(
            "SELECT * FROM engine.enqueue($1::jsonb) ORDER BY ord",
            [job("A", 10), job("B", 11), job("A", 12)],
        )
        assert [r["ord"] for r in rows] == [1, 2, 3]
        assert rows[0]["job_id"] is not None and rows[0]["error"] is None
        assert rows[1]["job_id"] is None and "may not enqueue" in rows[1]["error"]
        assert rows[2]["job_id"] is not None
        for t in ("queue.jobs", "oltp.tenants", "content.email_content", "oltp.sending_domains"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {t}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT engine.set_tenant('B')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM engine.enqueue_unchecked($1::jsonb)", [job("B", 13)])
        # naming a more powerful caller to the owner-rights function is refused
        for who in ("postgres", "engine_worker"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(
                    "SELECT * FROM engine.enqueue_as($1::jsonb, $2)", [job("B", 16)], who
                )
        # setting the GUC by hand changes nothing
        await conn.execute("SET engine.tenant_id = 'B'")
        (row,) = await conn.fetch("SELECT * FROM engine.enqueue($1::jsonb)", [job("B", 14)])
        assert row["job_id"] is None
    finally:
        await conn.close()
    assert await tenants.revoke_platform(pool, platform_login, "A")
    conn = await pool_mod.connect_one(dsn_as(cfg.database.dsn, platform_login))
    try:
        (row,) = await conn.fetch("SELECT * FROM engine.enqueue($1::jsonb)", [job("A", 15)])
        assert row["job_id"] is None
    finally:
        await conn.close()
    counts = await pool.fetch("SELECT tenant_id, count(*) AS n FROM queue.jobs GROUP BY 1")
    assert {r["tenant_id"]: r["n"] for r in counts} == {"A": 4, "B": 2}


async def test_the_worker_role_sends_across_tenants(cfg: Config, data: None) -> None:
    worker_cfg = cfg.database.__class__(**{**_fields(cfg.database), "role": "engine_worker"})
    wpool = await pool_mod.connect(worker_cfg, min_size=1)
    try:
        assert await wpool.fetchval("SELECT current_user") == "engine_worker"
        seen = {r["tenant_id"] for r in await wpool.fetch("SELECT tenant_id FROM queue.jobs")}
        assert seen == {"A", "B"}
        res = await enqueue(
            wpool, [orjson.dumps(job("B", 20))], max_message_bytes=1 << 20, max_age_s=3600
        )
        assert res[0].error is None
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await wpool.execute("ALTER TABLE queue.jobs NO FORCE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await wpool.execute("UPDATE engine.settings SET value = 'false'")
    finally:
        await wpool.close()


def _fields(struct: object) -> dict[str, object]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__}  # type: ignore[attr-defined]
