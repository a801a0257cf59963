"""Shared fixtures: a throwaway database on the shared PostgreSQL, a unique Redis key prefix.

Tests talk to the real servers (127.0.0.1:5432, 127.0.0.1:6379). Each test session gets its own
database, migrated once; each test gets clean tables and its own Redis prefix. Tests that kill or
restart servers start their own (see tests/servers.py).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import config as config_mod
from engine.config import Config
from engine.store.migrate import migrate

# The fake MailU node fixtures (mailu, mailu_tls) are available to every test.
pytest_plugins = ("tests.fakes.fixtures",)

PG_ADMIN_DSN = os.environ.get("ENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ENGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: The VERP secret of test configs: the engine refuses to start without one of >= 32 bytes.
TEST_VERP_SECRET = "tests-verp-secret-8f3a1c9e5b7d2046"

_TABLES = (
    "queue.jobs, content.email_content, content.email_messages, content.attachments, "
    "content.inbound_messages, oltp.suppressions, oltp.events, oltp.senders, oltp.tenants, "
    "olap.daily_stats"
)


def _dsn_for(db: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + db


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh, migrated database for this test session (dropped afterwards)."""
    name = f"engine_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def setup() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(_dsn_for(name))

    async def teardown() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(setup())
    yield _dsn_for(name)
    asyncio.run(teardown())


@pytest.fixture
def clean_db(pg_dsn: str) -> str:
    """The session database with every engine table emptied."""

    async def wipe() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            existing = await conn.fetchval(
                "SELECT string_agg(schemaname || '.' || tablename, ', ') FROM pg_tables"
                " WHERE schemaname IN ('queue', 'content', 'oltp', 'olap')"
            )
            await conn.execute(f"TRUNCATE {existing or _TABLES} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(wipe())
    return pg_dsn


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix owned by this test; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(cleanup())


def make_config(dsn: str, prefix: str, **sections: dict[str, object]) -> Config:
    """A Config for tests: database + redis prefix, plus any section overrides."""
    data: dict[str, object] = {
        # PM_TEST_DB_ROLE=engine_worker runs tests with the pool under the database's tenant
        # rules (FORCE ROW LEVEL SECURITY as a non-owner role).
        "database": {
            "dsn": dsn,
            "pool_min": 1,
            "pool_max": 5,
            **(
                {"role": os.environ["PM_TEST_DB_ROLE"]} if os.environ.get("PM_TEST_DB_ROLE") else {}
            ),
        },
        "redis": {"url": REDIS_URL, "prefix": prefix},
        "inbound": {"listen": "127.0.0.1:0", "verp_secret": TEST_VERP_SECRET},
        "admin": {"listen": "127.0.0.1:0"},
    }
    for name, values in sections.items():
        base = data.get(name, {})
        assert isinstance(base, dict)
        data[name] = {**base, **values}
    return config_mod.parse(data)


@pytest.fixture
def cfg(clean_db: str, redis_prefix: str) -> Config:
    return make_config(clean_db, redis_prefix)


@pytest.fixture
async def pool(cfg: Config) -> AsyncIterator[asyncpg.Pool]:
    from engine.store.pool import connect

    p = await connect(cfg.database)
    yield p
    await p.close()


@pytest.fixture
async def redis_client(cfg: Config) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(cfg.redis.url)
    yield client
    await client.aclose()
