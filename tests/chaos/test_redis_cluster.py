"""The engine on a real Redis Cluster (3 masters + 3 replicas started by the session fixture).

The queue's shards spread over every master, a blocking read on several shards wakes on new
work at once, shaping's Lua scripts run per slot, the daemon relays every job exactly once, and
killing a master mid-run (its replica takes over) loses no job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.config import RedisConfig
from engine.model import Priority
from engine.queue.streams import Streams, connect
from engine.servers import ThrowawayRedisCluster, ThrowawayRedisSentinel, redis_cli
from engine.shaping.model import ShapeRequest
from engine.shaping.shaper import Shaper
from tests.chaos.conftest import ChaosEnv, configure, duplicates, message_ids, received_ids, record
from tests.chaos.harness import DaemonProcess, prepare, wait_for
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos


def cluster_cfg(cluster: ThrowawayRedisCluster, **kw: object) -> RedisConfig:
    return RedisConfig(mode="cluster", url=cluster.url, prefix=f"c{uuid.uuid4().hex[:8]}", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def streams(redis_cluster: ThrowawayRedisCluster) -> AsyncIterator[Streams]:
    """The queue's streams on the cluster, 8 shards, a fresh prefix."""
    cfg = cluster_cfg(redis_cluster)
    client = connect(cfg)
    streams = Streams(client, cfg.prefix, shards=8)
    try:
        await streams.ensure_groups()
        yield streams
    finally:
        await streams.close()
        await client.aclose()


async def test_queue_shards_spread_over_every_master(
    redis_cluster: ThrowawayRedisCluster, streams: Streams
) -> None:
    assert await streams.check_epoch()  # first sight: nothing was there
    assert not await streams.check_epoch()
    jobs = [(i, f"t{i % 5}", i % 3) for i in range(1, 401)]
    for start in range(0, 400, 50):  # eight feeder rounds: one shard each, in turn
        await streams.push(jobs[start : start + 50])
    # Every master holds part of the queue (shard keys hash to different slots).
    for port in redis_cluster.masters():
        assert int(redis_cli(port, "dbsize").strip()) > 0, f"master {port} holds no shard"
    unread, length, pushed = await streams.backlog()
    assert (sum(unread), length, pushed) == (400, 400, 400)
    got = []
    while len(got) < 400:
        batch = await streams.read("c1", [8, 4, 1], 20, block_ms=0)
        assert batch, "entries left unread"
        got.extend(batch)
    assert sorted(e.job_id for e in got) == list(range(1, 401))
    assert {e.job_id: e.tenant_id for e in got}[7] == "t2"
    unread, length, _ = await streams.backlog()
    assert (sum(unread), length) == (0, 400)  # read, not yet acknowledged
    await streams.ack(got)
    assert await streams.depth() == {p.label: 0 for p in Priority}


async def test_a_blocked_read_wakes_on_any_shard_at_once(streams: Streams) -> None:
    for shard_start in range(3):  # the push lands on a different shard each time
        reader = asyncio.create_task(streams.read("c1", [8, 4, 1], 10, block_ms=3000))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await streams.push([(100 + shard_start, "acme", 1)])
        got = await asyncio.wait_for(reader, 5)
        if not got:  # woken by another shard's timeout: the next call returns it
            got = await streams.read("c1", [8, 4, 1], 10, block_ms=3000)
        assert [e.job_id for e in got] == [100 + shard_start]
        assert time.monotonic() - started < 1.0
        await streams.ack(got)


def _getkeys_calls(cluster: ThrowawayRedisCluster) -> int:
    total = 0
    for port in cluster.live_ports():
        for line in redis_cli(port, "info", "commandstats").splitlines():
            if line.startswith("cmdstat_command|getkeys:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


async def test_a_read_finds_its_slot_without_asking_a_server(
    redis_cluster: ThrowawayRedisCluster, streams: Streams
) -> None:
    """redis-py asks a server for the keys of XREADGROUP (COMMAND GETKEYS, twice a call)
    unless the client reads them from the arguments itself."""
    await streams.push([(1, "acme", 1)])
    before = _getkeys_calls(redis_cluster)
    got = await streams.read("c1", [8, 4, 1], 10, block_ms=0)
    got += await streams.read("c1", [8, 4, 1], 10, block_ms=0)
    # A consumer named like a keyword, and a blocking read, route the same way.
    await streams.push([(2, "acme", 0)])
    got += await streams.read("STREAMS", [8, 4, 1], 10, block_ms=100)
    assert await streams.client.xreadgroup("engine", "c2", {streams.keys[0]: ">"}, count=1) == []
    assert sorted(e.job_id for e in got) == [1, 2]
    assert _getkeys_calls(redis_cluster) == before
    await streams.ack(got)


async def test_shaping_scripts_run_per_slot_on_the_cluster(
    redis_cluster: ThrowawayRedisCluster,
) -> None:
    rcfg = cluster_cfg(redis_cluster)
    cfg = make_config(
        "postgresql://unused@127.0.0.1/unused",
        rcfg.prefix,
        redis={"mode": "cluster", "url": redis_cluster.url},
        shaping={"warmup": False, "burst_s": 1.0, "default_rate_per_s": 2.0},
    )
    client = connect(cfg.redis)
    try:
        shaper = Shaper(cfg, client)
        # Many tenants (many slots) and a relay-node bucket in one batch.
        batch = [
            ShapeRequest(f"t{i % 6}", f"s@t{i % 6}.example", "p", node="mailu-1") for i in range(18)
        ]
        decisions = await shaper.acquire(batch)
        # Burst 2 per sender x provider: two of each tenant's three requests go.
        assert sum(d.allowed for d in decisions) == 12
    finally:
        await client.aclose()


def cluster_config(
    tmp_path: Path, env: ChaosEnv, cluster: ThrowawayRedisCluster, node: FakeMailU
) -> Path:
    path = configure(tmp_path / "engine.toml", env, [node])
    text = path.read_text().replace(
        f'url = "{env.url}"', f'url = "{cluster.url}"\nmode = "cluster"', 1
    )
    path.write_text(text)
    return path


async def test_daemon_relays_every_job_once_on_a_cluster(
    chaos_env: ChaosEnv,
    redis_cluster: ThrowawayRedisCluster,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
) -> None:
    n = 600
    await prepare(chaos_env.dsn, n)
    with FakeMailU() as node:
        daemon = start_daemon(cluster_config(tmp_path, chaos_env, redis_cluster, node))
        final = await wait_for(chaos_env.dsn, lambda c: c.get("relayed", 0) >= n, 90, daemon)
        assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]
        assert final == {"relayed": n}
        unique, dups = duplicates([node])
        assert (unique, dups) == (n, 0)
        assert await message_ids(chaos_env.dsn, "relayed") == received_ids([node])


SIZES = [
    pytest.param(1500, id="1500-jobs"),
    pytest.param(10000, id="10k-jobs", marks=pytest.mark.slow),
]


async def kill_master_mid_run(
    env: ChaosEnv,
    node: FakeMailU,
    daemon: DaemonProcess,
    n: int,
    kill: Callable[[], int],
    wait_promoted: Callable[[int], object],
    name: str,
) -> None:
    """Kill the master (``kill`` returns its port) once a third has gone, wait for the
    promotion, then check every job ended relayed once, dups within the in-flight window."""
    await wait_for(env.dsn, lambda c: c.get("relayed", 0) >= n // 3, 90, daemon)
    killed_at = time.monotonic()
    victim = kill()
    await asyncio.to_thread(wait_promoted, victim)
    promoted_s = time.monotonic() - killed_at
    final = await wait_for(env.dsn, lambda c: c.get("relayed", 0) >= n, 180, daemon)
    done_s = time.monotonic() - killed_at
    assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]
    assert final == {"relayed": n}
    unique, dups = duplicates([node])
    assert unique == n, "every job reached the relay"
    assert dups <= 64, "duplicates stay within the in-flight window"
    assert await message_ids(env.dsn, "relayed") == received_ids([node])
    record(
        name,
        jobs=n,
        lost=n - unique,
        duplicates=dups,
        promoted_s=round(promoted_s, 1),
        drained_after_kill_s=round(done_s, 1),
    )


def _kill_first(group: ThrowawayRedisCluster | ThrowawayRedisSentinel, port: int) -> int:
    group.kill(port)
    return port


@pytest.mark.parametrize("n", SIZES)
async def test_master_killed_mid_run_loses_no_job(
    chaos_env: ChaosEnv,
    redis_cluster: ThrowawayRedisCluster,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    n: int,
) -> None:
    """A master is SIGKILLed a third of the way through; its replica is promoted. Entries it
    had not replicated are pushed again by the reconciler (stale push), and every job ends
    relayed: 0 lost, duplicates within the in-flight window."""
    await prepare(chaos_env.dsn, n)
    with FakeMailU() as node:
        daemon = start_daemon(cluster_config(tmp_path, chaos_env, redis_cluster, node))
        await kill_master_mid_run(
            chaos_env,
            node,
            daemon,
            n,
            lambda: _kill_first(redis_cluster, redis_cluster.masters()[0]),
            redis_cluster.wait_promoted,
            "redis_cluster_master_kill",
        )


async def test_sentinel_failover_mid_run_loses_no_job(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
) -> None:
    """``mode = "sentinel"`` (the sentinel with its own password): the master is SIGKILLed
    mid-run, the sentinel promotes the replica and the engine follows it: every job relayed,
    none lost."""
    n = 1200
    await prepare(chaos_env.dsn, n)
    secret = tmp_path / "sentinel.pass"
    secret.write_text("sentinel-s3cret\n")
    secret.chmod(0o600)
    with (
        ThrowawayRedisSentinel(sentinel_password="sentinel-s3cret") as sentinel,
        FakeMailU() as node,
    ):
        path = configure(tmp_path / "engine.toml", chaos_env, [node])
        sentinels = ", ".join(f'"{s}"' for s in sentinel.sentinels)
        path.write_text(
            path.read_text().replace(
                f'url = "{chaos_env.url}"',
                f'url = "redis://127.0.0.1/0"\nmode = "sentinel"\nsentinels = [{sentinels}]'
                f'\nservice_name = "{sentinel.SERVICE}"\nsentinel_password_file = "{secret}"',
                1,
            )
        )
        daemon = start_daemon(path)
        await kill_master_mid_run(
            chaos_env,
            node,
            daemon,
            n,
            lambda: _kill_first(sentinel, sentinel.master()),
            sentinel.wait_failover,
            "redis_sentinel_master_kill",
        )
