"""Read-only queries on ``[database] replica_dsn``, and back on the primary while it is down.

The replica here is another database on the shared server (what the reads return tells which
server answered); a replica that is down is a DSN on a port nobody listens on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from engine import config as config_mod
from engine.config import Config
from engine.errors import ConfigError
from engine.servers import free_port
from engine.store.pool import Reads, connect, connect_reads


async def _database(pool: asyncpg.Pool) -> str:
    name: str = await pool.fetchval("SELECT current_database()")
    return name


def _with_replica(cfg: Config, dsn: str) -> Config:
    db = msgspec.structs.replace(cfg.database, replica_dsn=dsn, replica_retry_s=5.0)
    return msgspec.structs.replace(cfg, database=db)


@pytest.fixture
async def primary(cfg: Config) -> AsyncIterator[asyncpg.Pool]:
    p = await connect(cfg.database)
    yield p
    await p.close()


async def test_reads_go_to_the_replica(cfg: Config, primary: asyncpg.Pool) -> None:
    """With a replica configured and up, read-only queries are answered by it."""
    replica_dsn = cfg.database.dsn.rsplit("/", 1)[0] + "/test"
    reads = await connect_reads(_with_replica(cfg, replica_dsn).database, primary)
    try:
        assert await reads.run(_database) == "test"
        assert await _database(primary) != "test"
    finally:
        await reads.close()


async def test_a_down_replica_falls_back_to_the_primary(cfg: Config, primary: asyncpg.Pool) -> None:
    """A replica that does not answer neither stops the start nor fails a read: the primary
    answers, and the replica is left alone for replica_retry_s."""
    now = [1000.0]
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    replica = await connect(_with_replica(cfg, dead).database, min_size=0, dsn=dead)
    reads = Reads(primary, replica, retry_s=5.0, clock=lambda: now[0])
    try:
        expected = await _database(primary)
        assert await reads.run(_database) == expected
        assert reads.pool is primary  # marked down
        now[0] += 5.0
        assert reads.pool is replica  # tried again after retry_s
        assert await reads.run(_database) == expected
    finally:
        await reads.close()


async def test_what_the_replica_lacks_yet_is_asked_of_the_primary(
    cfg: Config, primary: asyncpg.Pool
) -> None:
    """``missing``: a replica's answer that means "not replicated yet" goes to the primary
    again; the replica stays in use (it answered)."""
    replica_dsn = cfg.database.dsn.rsplit("/", 1)[0] + "/test"
    reads = await connect_reads(_with_replica(cfg, replica_dsn).database, primary)
    try:
        own = await _database(primary)
        assert await reads.run(_database, missing=lambda name: name == "test") == own
        assert await reads.run(_database, missing=lambda name: name is None) == "test"
        assert reads.pool is reads.replica
    finally:
        await reads.close()


async def test_a_replica_in_conflict_with_recovery_is_left_alone(
    cfg: Config, primary: asyncpg.Pool
) -> None:
    """ "canceling statement due to conflict with recovery" (SQLSTATE 40001 on a standby): the
    query runs on the primary and the replica is left alone for replica_retry_s."""
    now = [1000.0]
    replica_dsn = cfg.database.dsn.rsplit("/", 1)[0] + "/test"
    replica = await connect(_with_replica(cfg, replica_dsn).database, min_size=0, dsn=replica_dsn)
    reads = Reads(primary, replica, retry_s=5.0, clock=lambda: now[0])

    async def conflicting(pool: asyncpg.Pool) -> str:
        if pool is replica:
            raise asyncpg.SerializationError("canceling statement due to conflict with recovery")
        return await _database(pool)

    try:
        assert await reads.run(conflicting) == await _database(primary)
        assert reads.pool is primary
    finally:
        await reads.close()


async def test_without_a_replica_reads_use_the_primary(cfg: Config, primary: asyncpg.Pool) -> None:
    reads = await connect_reads(cfg.database, primary)
    assert reads.pool is primary
    assert await reads.run(_database) == await _database(primary)


@pytest.mark.parametrize("tier", ["queue", "oltp"])
def test_queue_or_oltp_on_another_server_is_refused_with_the_reason(tier: str) -> None:
    """[database.queue|oltp] naming another server is refused and says what ties the tier."""
    data = {"database": {tier: {"dsn": "postgresql://engine@elsewhere:5432/engine"}}}
    with pytest.raises(ConfigError, match=f"database.{tier}.dsn") as err:
        config_mod.parse(data)
    assert "commit" in str(err.value) and "queue" in str(err.value)
    assert "only [database.content] and [database.olap]" in (err.value.hint or "")
    same = config_mod.parse({"database": {tier: {"dsn": config_mod.DatabaseConfig().dsn}}})
    assert getattr(same.database, tier).dsn == same.database.dsn
    assert not same.database.apart(tier)
