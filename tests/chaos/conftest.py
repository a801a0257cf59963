"""Chaos/load fixtures: one throwaway PostgreSQL + Redis per session, a fresh database per test.

Starting a cluster costs ~4 s, so the fault tests share one pair and each test gets its own
database and an empty Redis (FLUSHALL). A test that stops, freezes or restarts PostgreSQL or
Redis must leave them running again (the fixture checks, and restarts them if not).

Heavy variants are marked ``@pytest.mark.slow`` and skipped unless ``-m slow`` is given or
``ENGINE_SLOW=1`` is set; a reduced size of each always runs in ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from engine.servers import ThrowawayPostgres, ThrowawayRedis, ThrowawayRedisCluster, redis_cli
from engine.store.pool import connect_one
from tests.chaos.harness import DaemonProcess, write_config
from tests.fakes.mailu import FakeMailU


def slow_enabled(config: pytest.Config) -> bool:
    markexpr = str(getattr(config.option, "markexpr", "") or "")
    return os.environ.get("ENGINE_SLOW") == "1" or "slow" in markexpr


def skip_slow_unless_asked(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") is not None and not slow_enabled(item.config):
        pytest.skip("heavy variant: run with `pytest -m slow` or ENGINE_SLOW=1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    skip_slow_unless_asked(item)


@dataclass
class ChaosEnv:
    """A fresh database on the shared throwaway PostgreSQL, and the (flushed) shared Redis.

    Has the ``dsn``/``url`` attributes :func:`tests.chaos.harness.write_config` reads, so it can
    stand for both servers there.
    """

    pg: ThrowawayPostgres
    redis: ThrowawayRedis
    database: str

    @property
    def dsn(self) -> str:
        return self.pg.dsn.rsplit("/", 1)[0] + "/" + self.database

    @property
    def url(self) -> str:
        return self.redis.url


@pytest.fixture(scope="session")
def chaos_servers() -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis]]:
    with ThrowawayPostgres() as pg, ThrowawayRedis() as redis:
        yield pg, redis


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[ThrowawayRedisCluster]:
    """A real Redis Cluster (3 masters, 1 replica each) shared by the session's cluster tests."""
    with ThrowawayRedisCluster() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_session: ThrowawayRedisCluster) -> ThrowawayRedisCluster:
    """The session's cluster, every node up (a node a test killed rejoins as a replica) and
    every master flushed."""
    cluster = redis_cluster_session
    for port in cluster.ports:
        if port not in cluster.live_ports():
            cluster.start_node(port)
    cluster.wait_ok()
    for port in cluster.masters():
        redis_cli(port, "flushall")
    return cluster


def _ensure_running(pg: ThrowawayPostgres, redis: ThrowawayRedis) -> None:
    if pg.proc is None or pg.proc.poll() is not None:
        pg.start()
    if redis.proc is None or redis.proc.poll() is not None:
        redis.start()


@pytest.fixture
def chaos_env(chaos_servers: tuple[ThrowawayPostgres, ThrowawayRedis]) -> Iterator[ChaosEnv]:
    pg, redis = chaos_servers
    _ensure_running(pg, redis)
    env = ChaosEnv(pg, redis, f"chaos_{uuid.uuid4().hex[:10]}")

    async def setup() -> None:
        conn = await connect_one(pg.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{env.database}"')
        finally:
            await conn.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()

    asyncio.run(setup())
    yield env
    _ensure_running(pg, redis)

    async def teardown() -> None:
        conn = await connect_one(pg.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{env.database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(teardown())


def configure(
    path: Path,
    env: ChaosEnv,
    nodes: Sequence[FakeMailU],
    *,
    queue: dict[str, object] | None = None,
    **sections: dict[str, object],
) -> Path:
    """:func:`write_config`, plus extra keys in its other sections (``relay={...}`` etc.)."""
    write_config(path, env, env, nodes, **(queue or {}))  # type: ignore[arg-type]
    text = path.read_text()
    for section, values in sections.items():
        header = f"[{section}]\n"
        assert header in text, f"write_config has no [{section}] section"
        extra = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in values.items())
        text = text.replace(header, header + extra, 1)
    path.write_text(text)
    return path


def duplicates(nodes: Sequence[FakeMailU]) -> tuple[int, int]:
    """(unique Message-IDs, extra copies) over every sink together."""
    seen: dict[str | None, int] = {}
    for node in nodes:
        for mid, n in node.message_id_counts().items():
            seen[mid] = seen.get(mid, 0) + n
    return len(seen), sum(n - 1 for n in seen.values())


def record(name: str, **figures: object) -> None:
    """Append measured figures to ``$ENGINE_RELIABILITY_REPORT`` (docs/reliability.md tables)."""
    line = orjson.dumps({"test": name, **figures}).decode()
    print(line)
    target = os.environ.get("ENGINE_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


async def poll(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``pred()``; returns the seconds it took (AssertionError naming ``what``)."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def message_ids(dsn: str, state: str) -> set[str]:
    """Message-IDs PostgreSQL recorded for jobs in ``state``."""
    conn = await connect_one(dsn)
    try:
        rows = await conn.fetch("SELECT message_id FROM queue.jobs WHERE state = $1", state)
    finally:
        await conn.close()
    return {r["message_id"] for r in rows}


def received_ids(nodes: Sequence[FakeMailU]) -> set[str | None]:
    return {mid for node in nodes for mid in node.message_id_counts()}


@pytest.fixture
def start_daemon() -> Iterator[Callable[[Path], DaemonProcess]]:
    """Start ``engine run`` subprocesses; any still alive at teardown is killed (so a failing
    test cannot leave a daemon behind to disturb the next one)."""
    started: list[DaemonProcess] = []

    def start(config: Path) -> DaemonProcess:
        daemon = DaemonProcess(config).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.reap()
