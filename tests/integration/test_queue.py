"""The hybrid queue: PostgreSQL truth, Redis fast path, reconciler repairs, priorities."""

from __future__ import annotations

import asyncpg
import msgspec
import orjson
import redis.asyncio as aioredis

from engine.config import Config
from engine.enqueue import enqueue
from engine.queue import feeder, reconciler
from engine.queue.streams import Streams
from engine.store import feeding, tenants
from engine.store import jobs as job_store


def job(i: int, priority: str = "normal", **over: object) -> bytes:
    doc = {
        "tenant_id": "acme",
        "idempotency_key": f"{priority}-{i}",
        "from": "news@acme.example",
        "to": f"user{i}@example.com",
        "text": "hi",
        "priority": priority,
        **over,
    }
    return orjson.dumps(doc)


async def _setup(pool: asyncpg.Pool, cfg: Config, items: list[bytes]) -> None:
    await tenants.add(pool, "acme")
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)


async def test_feed_read_claim_outcome_ack(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, cfg, [job(i) for i in range(20)])
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.ensure_groups()
    assert await feeder.feed_once(pool, streams, cfg.queue) == 20
    assert await feeder.feed_once(pool, streams, cfg.queue) == 0  # nothing pushed twice
    entries = await streams.read("w1", [8, 4, 1], 10, block_ms=0)
    assert len(entries) == 20
    claimed = await job_store.claim(pool, [e.job_id for e in entries], owner="w1", lease_s=60)
    assert len(claimed) == 20
    # a duplicate entry for a claimed job is not claimed again
    assert await job_store.claim(pool, [claimed[0].id], owner="w2", lease_s=60) == []
    rows = [job_store.OutcomeRow(j.id, j.attempts, "relayed") for j in claimed]
    async with pool.acquire() as conn:
        written = await job_store.write_outcomes(conn, "w1", rows)
    assert len(written) == 20
    await streams.ack(entries)
    assert sum((await streams.depth()).values()) == 0
    assert (await job_store.counts(pool))["relayed"] == 20


async def test_outcome_of_lost_lease_is_ignored(pool: asyncpg.Pool, cfg: Config) -> None:
    await _setup(pool, cfg, [job(1)])
    (jid,) = [r["id"] for r in await pool.fetch("SELECT id FROM queue.jobs")]
    (a,) = await job_store.claim(pool, [jid], owner="dead", lease_s=0.01)
    await pool.execute("SELECT pg_sleep(0.05)")
    (b,) = await job_store.claim(pool, [jid], owner="alive", lease_s=60)
    assert b.attempts == a.attempts + 1
    async with pool.acquire() as conn:
        assert (
            await job_store.write_outcomes(
                conn, "dead", [job_store.OutcomeRow(jid, a.attempts, "failed")]
            )
            == []
        )
        assert (
            len(
                await job_store.write_outcomes(
                    conn, "alive", [job_store.OutcomeRow(jid, b.attempts, "relayed")]
                )
            )
            == 1
        )


async def test_redis_flush_is_repaired(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, cfg, [job(i) for i in range(30)])
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.check_epoch()
    assert await feeder.feed_once(pool, streams, cfg.queue) == 30
    keys = [k async for k in redis_client.scan_iter(match=f"{cfg.redis.prefix}:*")]
    await redis_client.delete(*keys)  # what FLUSHALL does to our keys
    repairs = await reconciler.reconcile_once(pool, streams, cfg.queue, "w1")
    assert repairs["redis_lost"] == 30
    assert await feeder.feed_once(pool, streams, cfg.queue) == 30
    entries = await streams.read("w1", [8, 4, 1], 10, block_ms=0)
    assert len({e.job_id for e in entries}) == 30


async def test_dead_consumer_jobs_released(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, cfg, [job(i) for i in range(5)])
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.check_epoch()
    await feeder.feed_once(pool, streams, cfg.queue)
    entries = await streams.read("ghost", [8, 4, 1], 10, block_ms=0)
    await job_store.claim(pool, [e.job_id for e in entries], owner="ghost", lease_s=600)
    # "ghost" never sent a heartbeat: it is dead; "me" is alive
    await streams.heartbeat("me", 30)
    repairs = await reconciler.reconcile_once(pool, streams, cfg.queue, "me")
    assert repairs["dead_consumer"] == 5
    assert (await job_store.counts(pool))["deferred"] == 5
    assert await feeder.feed_once(pool, streams, cfg.queue) == 5


async def test_priorities_weighted_and_low_not_starved(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    items = [job(i, "high") for i in range(200)] + [job(i, "low") for i in range(200)]
    await _setup(pool, cfg, items)
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.ensure_groups()
    await feeder.feed_once(pool, streams, cfg.queue)
    first = await streams.read("w", [8, 4, 1], 5, block_ms=0)
    by_stream = {s: sum(1 for e in first if e.stream.endswith(s)) for s in ("high", "low")}
    # 8·5 high and 1·5 low, then normal's unused 4·5 shared 8:1 between them (work-conserving)
    assert by_stream["high"] == 40 + 17 and by_stream["low"] == 5 + 2


async def test_one_busy_priority_reads_the_whole_budget(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, cfg, [job(i) for i in range(200)])
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.ensure_groups()
    await feeder.feed_once(pool, streams, cfg.queue)
    entries = await streams.read("w", [8, 4, 1], 10, block_ms=0)
    assert len(entries) == 130  # all of 13·10, not normal's 4·10
    assert len({e.job_id for e in entries}) == 130
    rest = await streams.read("w", [8, 4, 1], 10, block_ms=0)
    assert len(rest) == 70 and not {e.job_id for e in rest} & {e.job_id for e in entries}


async def test_scheduled_job_waits(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, cfg, [job(1, send_at="2099-01-01T00:00:00Z"), job(2)])
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.ensure_groups()
    assert await feeder.feed_once(pool, streams, cfg.queue) == 1
    assert await feeding.next_due_in(pool) is not None


async def test_push_one_script_call_every_priority_and_big_ids(
    cfg: Config, redis_client: aioredis.Redis
) -> None:
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.ensure_groups()
    await redis_client.script_flush()  # the first push must load the script itself
    big = 2**62 + 12345  # beyond a Lua double's 14 printed digits
    await streams.push([(1, "acme", 2), (big, "beta", 0), (3, "acme", 1), (4, "odd", 7)])
    await streams.push([(5, "acme", 1)])  # the script is cached now
    entries = await streams.read("w1", [8, 4, 1], 10, block_ms=0)
    got = [(e.stream.rsplit(":", 1)[1], e.job_id, e.tenant_id) for e in entries]
    assert got == [
        ("high", big, "beta"),
        ("normal", 3, "acme"),
        ("normal", 5, "acme"),
        ("low", 1, "acme"),
        ("low", 4, "odd"),  # a priority outside the streams goes to the lowest one
    ]
    await streams.push([])  # nothing to do, no call


async def test_backlog_counts_unread_per_priority_over_every_shard(
    cfg: Config, redis_client: aioredis.Redis
) -> None:
    """One script call per shard: unread entries per priority, entries on the streams (read
    ones stay until acknowledged), entries ever pushed; an emptied Redis counts as empty."""
    streams = Streams(redis_client, cfg.redis.prefix, shards=3)
    await streams.ensure_groups()
    await redis_client.script_flush()  # the first call must load the script itself
    assert await streams.backlog() == ([0, 0, 0], 0, 0)
    for start in range(0, 9, 3):  # three pushes: one per shard
        await streams.push([(start + 1, "a", 0), (start + 2, "a", 1), (start + 3, "a", 2)])
    assert await streams.backlog() == ([3, 3, 3], 9, 9)
    read = await streams.read("w1", [1, 1, 1], 1, block_ms=0)  # one per stream of each shard
    assert len(read) == 9
    await streams.push([(10, "a", 2)])
    assert await streams.backlog() == ([0, 0, 1], 10, 10)
    await streams.ack(read[:4])
    assert await streams.backlog() == ([0, 0, 1], 6, 10)
    await redis_client.delete(*streams.keys)  # streams and their group gone (a flush)
    assert await streams.backlog() == ([0, 0, 0], 0, 10)


async def test_feeding_visits_only_tenants_with_waiting_mail(pool: asyncpg.Pool) -> None:
    # 3,000 idle tenants: a round must cost probes per tenant *with* mail, not per tenant.
    await pool.execute(
        "INSERT INTO oltp.tenants (tenant_id) SELECT 'idle' || g FROM generate_series(1, 3000) g"
    )
    for t in ("big", "small", "late"):
        await tenants.add(pool, t)
    items = [job(i, tenant_id="big", idempotency_key=f"b{i}") for i in range(300)]
    items += [job(1, tenant_id="small", idempotency_key="s1")]
    items += [job(1, tenant_id="late", idempotency_key="l1", send_at="2099-01-01T00:00:00Z")]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)
    await pool.execute("ANALYZE queue.jobs")
    async with pool.acquire() as conn:
        plan = await conn.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {feeding._WAITING_TENANTS}", 1, "", 50
        )
        top = orjson.loads(plan)[0]["Plan"]
        # A few pages per waiting tenant (walking all 3,003 tenants touched ~3,500).
        assert top["Shared Hit Blocks"] + top.get("Shared Read Blocks", 0) < 60, top
        async with conn.transaction():
            rows = await feeding.take_due(conn, [0, 50, 0])
    # Three tenants waiting (late's job is scheduled): up to 2 * 50 / 3 = 34 each; small has 1.
    assert len(rows) == 35
    # Round robin: the small tenant's one job comes in the first turn, not after big's 300.
    assert [r["tenant_id"] for r in rows[:2]] in (["big", "small"], ["small", "big"])
    assert {r["tenant_id"] for r in rows} == {"big", "small"}  # late's job is not due


async def test_more_tenants_waiting_than_a_round_serves_take_turns_round_the_ring(
    pool: asyncpg.Pool,
) -> None:
    names = [f"t{i:02d}" for i in range(25)]
    for t in names:
        await tenants.add(pool, t)
    items = [job(k, tenant_id=t, idempotency_key=f"{t}-{k}") for t in names for k in range(3)]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)
    cursor = feeding.FeedCursor()
    served: list[list[str]] = []
    async with pool.acquire() as conn:
        for _ in range(4):
            async with conn.transaction():
                rows = await feeding.take_due(conn, [0, 10, 0], cursor)
            served.append([r["tenant_id"] for r in rows])
            assert len(rows) == 10
        # Ten tenants a round, each once, going on where the last round stopped...
        assert served[0] == names[:10] and served[1] == names[10:20]
        assert cursor.more  # (the ring is not done: the feeder goes on at once)
        # ... and round the end of the ring to its start again (second jobs, same turns).
        assert served[2] == names[20:25] + names[:5]
        assert served[3] == names[5:15]


async def test_a_tenant_of_weight_2_gets_twice_the_turns_of_weight_1(pool: asyncpg.Pool) -> None:
    # oltp.shaping_tenant_quotas.weight is the tenant's fair share in the feeder's turns.
    for t in ("gold", "plain", "third"):
        await tenants.add(pool, t)
    await pool.execute(
        "INSERT INTO oltp.shaping_tenant_quotas (tenant_id, weight)"
        " VALUES ('gold', 2), ('third', 1)"  # plain has no row: weight 1
    )
    items = [
        job(k, tenant_id=t, idempotency_key=f"{t}-{k}")
        for t in ("gold", "plain", "third")
        for k in range(200)
    ]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)
    served: dict[str, int] = {}
    async with pool.acquire() as conn:
        for _ in range(5):  # every round is under contention: 200 jobs each, 40 a round
            async with conn.transaction():
                rows = await feeding.take_due(conn, [0, 40, 0])
            assert len(rows) == 40
            for r in rows:
                served[r["tenant_id"]] = served.get(r["tenant_id"], 0) + 1
            # the stream order interleaves them the same way: two of gold's per other turn
            head = [r["tenant_id"] for r in rows[:8]]
            assert head.count("gold") == 4 and head.count("plain") == head.count("third") == 2
    assert served["plain"] == served["third"] == 50
    assert served["gold"] == 100


async def test_push_mark_is_hot_and_stale_pushes_are_repaired(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    # Migration 150: no index names pushed_at, so marking jobs pushed writes no index entry.
    await _setup(pool, cfg, [job(i) for i in range(50)])
    async with pool.acquire() as conn, conn.transaction():
        pushed = await feeding.take_due(conn, [0, 50, 0])
        hot = await conn.fetchval(
            "SELECT pg_stat_get_xact_tuples_hot_updated('queue.jobs'::regclass)"
        )
    assert len(pushed) == 50 and hot == 50
    # Redis lost them 10 minutes ago (they were due before they were pushed).
    await pool.execute(
        "UPDATE queue.jobs SET pushed_at = now() - interval '10 minutes',"
        " next_attempt_at = now() - interval '11 minutes'"
    )
    streams = Streams(redis_client, cfg.redis.prefix)
    await streams.check_epoch()
    quiet = await reconciler.reconcile_once(pool, streams, cfg.queue, "me", stale_push=False)
    assert "stale_push" not in quiet
    assert await feeder.feed_once(pool, streams, cfg.queue) == 0
    repairs = await reconciler.reconcile_once(pool, streams, cfg.queue, "me")
    assert repairs["stale_push"] == 50
    assert await feeder.feed_once(pool, streams, cfg.queue) == 50


def test_stale_pushes_are_looked_for_at_most_twice_per_reconcile_after(cfg: Config) -> None:
    assert reconciler.stale_push_every_s(cfg.queue) == 150.0  # 15 s rounds, 300 s after
    quick = msgspec.structs.replace(cfg.queue, reconcile_interval_s=1.0, reconcile_after_s=1.0)
    assert reconciler.stale_push_every_s(quick) == 1.0
