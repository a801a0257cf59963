"""kill -9 and Redis FLUSHALL mid-run: every job is relayed, none lost, duplicates only from the
in-flight window (counted at the sink by Message-ID)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from engine.servers import ThrowawayPostgres, ThrowawayRedis
from tests.chaos.harness import DaemonProcess, prepare, wait_for, write_config
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos

N = 5000
IN_FLIGHT = 64


@pytest.fixture
def servers() -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis]]:
    with ThrowawayPostgres() as pg, ThrowawayRedis() as redis:
        yield pg, redis


def relayed(n: int) -> object:
    return lambda c: c.get("relayed", 0) >= n


async def test_kill9_five_times_mid_run_loses_nothing(
    servers: tuple[ThrowawayPostgres, ThrowawayRedis], tmp_path: Path
) -> None:
    pg, redis = servers
    await prepare(pg.dsn, N)
    with FakeMailU() as node:
        cfg = write_config(tmp_path / "engine.toml", pg, redis, [node])
        kills = 0
        # five kill -9 during one run (issue 8), each after more mail has gone out
        for target in (N * k // 6 for k in range(1, 6)):
            daemon = DaemonProcess(cfg).start()
            await wait_for(pg.dsn, relayed(target), 120, daemon)
            daemon.kill9()
            kills += 1
        daemon = DaemonProcess(cfg).start()
        final = await wait_for(pg.dsn, relayed(N), 180, daemon)
        assert daemon.terminate() == 0
        assert final.get("sending", 0) == 0
        counts = node.message_id_counts()
        assert len(counts) == N, "every job reached the relay"
        dups = sum(n - 1 for n in counts.values())
        assert dups <= kills * IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"


async def test_redis_flushall_mid_run_loses_nothing(
    servers: tuple[ThrowawayPostgres, ThrowawayRedis], tmp_path: Path
) -> None:
    pg, redis = servers
    await prepare(pg.dsn, N)
    with FakeMailU() as node:
        cfg = write_config(tmp_path / "engine.toml", pg, redis, [node])
        daemon = DaemonProcess(cfg).start()
        await wait_for(pg.dsn, relayed(N // 4), 120, daemon)
        client = aioredis.Redis.from_url(redis.url)
        await client.flushall()
        await client.aclose()
        final = await wait_for(pg.dsn, relayed(N), 180, daemon)
        assert daemon.terminate() == 0
        assert final.get("sending", 0) == 0
        counts = node.message_id_counts()
        assert len(counts) == N
        assert sum(n - 1 for n in counts.values()) <= IN_FLIGHT


async def test_sigterm_drains_and_exits_zero(
    servers: tuple[ThrowawayPostgres, ThrowawayRedis], tmp_path: Path
) -> None:
    pg, redis = servers
    await prepare(pg.dsn, 1000)
    with FakeMailU() as node:
        node.delay_s = 0.01
        cfg = write_config(tmp_path / "engine.toml", pg, redis, [node])
        daemon = DaemonProcess(cfg).start()
        await wait_for(pg.dsn, relayed(100), 60, daemon)
        assert daemon.terminate() == 0
        from tests.chaos.harness import counts as job_counts

        after = await job_counts(pg.dsn)
        assert after.get("sending", 0) == 0, "drain left jobs in sending"
        assert node.count() == after.get("relayed", 0)
