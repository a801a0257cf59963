"""Fast recovery in the queue: stable consumer names, taking over a predecessor's claims and the
entries it read, and a dead consumer's unread entries made pushable again at once."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import orjson
import redis.asyncio as aioredis

from engine.config import Config
from engine.enqueue import enqueue
from engine.queue import feeder, identity, reconciler
from engine.queue.streams import Streams
from engine.store import jobs as job_store
from engine.store import tenants


async def _setup(pool: asyncpg.Pool, n: int) -> None:
    await tenants.add(pool, "acme")
    items = [
        orjson.dumps(
            {
                "tenant_id": "acme",
                "idempotency_key": f"k{i}",
                "from": "news@acme.example",
                "to": f"user{i}@example.com",
                "text": "hi",
            }
        )
        for i in range(n)
    ]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res)


async def _streams(cfg: Config, client: aioredis.Redis) -> Streams:
    streams = Streams(client, cfg.redis.prefix)
    await streams.check_epoch()
    return streams


async def test_restarted_consumer_takes_over_claims_and_unread_entries_at_once(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, 10)
    streams = await _streams(cfg, redis_client)
    assert await feeder.feed_once(pool, streams, cfg.queue) == 10
    entries = await streams.read("host-w0", [8, 4, 1], 10, block_ms=0)
    assert len(entries) == 10
    # The predecessor claimed 4 of the 10 it read, then was killed (lease 120 s).
    await job_store.claim(pool, [e.job_id for e in entries[:4]], owner="host-w0", lease_s=120)

    taken = await identity.take_over(pool, streams, "host-w0", "host-w0")

    assert taken == {"released": 4, "unpushed": 6}
    assert (await job_store.counts(pool))["sending"] == 0
    pending = await redis_client.xpending(streams.keys[1], "engine")
    assert pending["pending"] == 0, "the predecessor's entries are acknowledged"
    assert await feeder.feed_once(pool, streams, cfg.queue) == 10, "all 10 pushable again now"
    again = await streams.read("host-w0", [8, 4, 1], 10, block_ms=0)
    claimed = await job_store.claim(pool, [e.job_id for e in again], owner="host-w0", lease_s=60)
    assert len(claimed) == 10


async def test_dead_consumer_unread_entries_are_pushed_again(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    await _setup(pool, 6)
    streams = await _streams(cfg, redis_client)
    await feeder.feed_once(pool, streams, cfg.queue)
    entries = await streams.read("ghost", [8, 4, 1], 10, block_ms=0)
    await job_store.claim(pool, [e.job_id for e in entries[:2]], owner="ghost", lease_s=600)
    await streams.heartbeat("me", 30)

    repairs = await reconciler.reconcile_once(pool, streams, cfg.queue, "me")

    assert repairs["dead_consumer"] == 2 and repairs["dead_unread"] == 4
    # Not 300 s later by the stale-push repair: the feeder takes all six in its next round.
    assert await feeder.feed_once(pool, streams, cfg.queue) == 6
    names = {c["name"] for c in await redis_client.xinfo_consumers(streams.keys[1], "engine")}
    assert b"ghost" not in names and "ghost" not in names


async def test_consumer_name_is_stable_and_never_shared_by_live_processes(
    cfg: Config, redis_client: aioredis.Redis
) -> None:
    streams = Streams(redis_client, cfg.redis.prefix)
    # A predecessor on this host that has exited: its name is free at once.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead_token = identity.holder_token(int(gone.stdout))
    assert identity.holder_gone(dead_token)
    await redis_client.set(streams.heartbeat_key("h-w0"), dead_token, px=60_000)
    assert await identity.claim_name(streams, "h-w0", 30) == "h-w0"
    assert streams.holder == identity.holder_token()
    # This live process holds h-w0 now: a second claimant gets the next slot.
    other = Streams(redis_client, cfg.redis.prefix)
    await redis_client.set(other.heartbeat_key("h-w0"), identity.holder_token(1), px=60_000)
    assert await identity.claim_name(other, "h-w0", 30) == "h-w0.1"
    # Another host's holder counts as alive until its heartbeat expires.
    assert not identity.holder_gone(b"elsewhere:1:1")
    assert identity.base_name("", "3").endswith("-w3")
    assert identity.base_name("edge", None) == "edge"


async def test_lost_claims_released_but_jobs_being_sent_kept(
    pool: asyncpg.Pool, cfg: Config, redis_client: aioredis.Redis
) -> None:
    """After a failed dispatch round the dispatcher gives back what it claimed but no task is
    sending (a claim whose reply the broken connection swallowed), not what it is sending."""
    await _setup(pool, 3)
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM queue.jobs ORDER BY id")]
    await job_store.claim(pool, ids, owner="me", lease_s=120)
    assert await job_store.release_leases(pool, ["me"], keep=[ids[0]]) == 2
    rows = await pool.fetch("SELECT id, state FROM queue.jobs ORDER BY id")
    assert [r["state"] for r in rows] == ["sending", "deferred", "deferred"]
    streams = await _streams(cfg, redis_client)
    assert await feeder.feed_once(pool, streams, cfg.queue) == 2, "pushed again at once"
