"""Security tests run with the database's tenant rules on: the pool as ``engine_worker``.

The domain, raw-message and SSRF suites get their pool through ``PM_TEST_DB_ROLE`` (see
tests/conftest.py ``make_config``), so every query they make goes through FORCE ROW LEVEL
SECURITY as the daemon's non-owner role. What only the owner may do (the enqueue rules in
``engine.settings``) goes through ``owner``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.config import Config
from engine.store.pool import connect_one

ROLE_ON = ("test_domains_", "test_raw_", "test_ssrf_", "test_rls_admin")


@pytest.fixture(autouse=True)
def _engine_worker_role(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.module.__name__.rsplit(".", 1)[-1].startswith(ROLE_ON):
        monkeypatch.setenv("PM_TEST_DB_ROLE", "engine_worker")


@pytest.fixture
async def owner(cfg: Config) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the login role that migrates (the tables' owner)."""
    conn = await connect_one(cfg.database.dsn)
    try:
        yield conn
    finally:
        await conn.close()
