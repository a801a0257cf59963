"""Events: batched writes to oltp.events and the Redis stream platform services consume.

A consumer group reads what the publisher put on the stream; an event committed late (lower id,
later commit) is never skipped; Redis being down neither raises nor loses anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine import metrics
from engine.config import Config
from engine.errors import EventError
from engine.events import Event, EventKind, write
from engine.events.model import from_json
from engine.events.store import START, load_cursor
from engine.events.stream import (
    STREAM_CURSOR,
    Publisher,
    entry_fields,
    publish,
    run_publisher,
    stream_key,
)
from engine.store import tenants


def ev(i: int, kind: str = "relayed", tenant: str = "acme") -> Event:
    return Event(
        tenant_id=tenant,
        kind=kind,
        job_id=i,
        message_id=f"<m{i}@acme.example>",
        recipient=f"user{i}@example.com",
        reply="250 2.0.0 OK" if kind == "relayed" else None,
        at=dt.datetime.now(dt.UTC),
        data={"sender": "news@acme.example", "n": i},
    )


async def write_committed(pool: asyncpg.Pool, events: list[Event]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await write(conn, events)


async def read_group(
    client: aioredis.Redis, key: str, group: str, count: int = 100
) -> list[dict[bytes, bytes]]:
    got: Any = await client.xreadgroup(group, "c1", {key: ">"}, count=count)
    return [fields for _, entries in got for _, fields in entries]


@pytest.fixture
async def acme(pool: asyncpg.Pool) -> str:
    await tenants.add(pool, "acme")
    return "acme"


async def test_consumer_group_reads_published_events(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis, acme: str
) -> None:
    key = stream_key(cfg.redis.prefix)
    await redis_client.xgroup_create(key, "platform", id="0", mkstream=True)
    await write_committed(pool, [ev(1), ev(2, "bounced"), ev(3, "deferred")])
    publisher = Publisher(pool, redis_client, cfg.redis.prefix, cfg.events)
    assert await publisher.publish_once() == 3
    assert await publisher.publish_once() == 0  # the cursor moved: nothing twice
    fields = await read_group(redis_client, key, "platform")
    assert [f[b"kind"] for f in fields] == [b"relayed", b"bounced", b"deferred"]
    first = fields[0]
    assert first[b"v"] == b"1" and first[b"tenant_id"] == b"acme" and first[b"job_id"] == b"1"
    assert first[b"recipient"] == b"user1@example.com"
    event = from_json(first[b"event"])
    assert event.id == int(first[b"id"]) and event.reply == "250 2.0.0 OK"
    assert event.data == {"sender": "news@acme.example", "n": 1}
    rows = await pool.fetch("SELECT id FROM oltp.events ORDER BY id")
    assert [from_json(f[b"event"]).id for f in fields] == [r["id"] for r in rows]


async def test_late_commit_with_lower_id_is_not_skipped(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis, acme: str
) -> None:
    key = stream_key(cfg.redis.prefix)
    await redis_client.xgroup_create(key, "platform", id="0", mkstream=True)
    publisher = Publisher(pool, redis_client, cfg.redis.prefix, cfg.events)
    slow = await pool.acquire()
    tx = slow.transaction()
    await tx.start()
    await write(slow, [ev(1)])  # takes the lower id, commits last
    await write_committed(pool, [ev(2)])
    assert await publisher.publish_once() == 0  # held back: an older writer is still open
    await tx.commit()
    await pool.release(slow)
    assert await publisher.publish_once() == 2
    fields = await read_group(redis_client, key, "platform")
    assert sorted(int(f[b"job_id"]) for f in fields) == [1, 2]


async def test_redis_down_does_not_raise_and_loses_nothing(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis, acme: str
) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    before = metrics.EVENTS_PUBLISH_FAILURES._value.get()
    try:
        assert await publish(dead, cfg.redis.prefix, [ev(9)], maxlen=100) is False
        await write_committed(pool, [ev(1), ev(2)])
        down = Publisher(pool, dead, cfg.redis.prefix, cfg.events)
        assert await down.publish_once() == -1
    finally:
        await dead.aclose()
    assert metrics.EVENTS_PUBLISH_FAILURES._value.get() == before + 2
    async with pool.acquire() as conn:
        assert await load_cursor(conn, STREAM_CURSOR) == START  # not advanced past them
    up = Publisher(pool, redis_client, cfg.redis.prefix, cfg.events)
    assert await up.publish_once() == 2
    assert await redis_client.xlen(stream_key(cfg.redis.prefix)) == 2


async def test_background_publisher_and_unknown_kind(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis, acme: str
) -> None:
    with pytest.raises(EventError, match="unknown event kind"):
        await write_committed(pool, [ev(1, "deliverd")])
    stop = asyncio.Event()
    task = asyncio.create_task(run_publisher(pool, redis_client, cfg, stop))
    try:
        kinds = [k.value for k in EventKind]
        await write_committed(pool, [ev(i, k) for i, k in enumerate(kinds)])
        key = stream_key(cfg.redis.prefix)
        for _ in range(100):
            if await redis_client.xlen(key) == len(kinds):
                break
            await asyncio.sleep(0.05)
        assert await redis_client.xlen(key) == len(kinds)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_stream_entries_are_the_events_fields_and_the_stream_is_trimmed(
    cfg: Config, redis_client: aioredis.Redis
) -> None:
    key = stream_key(cfg.redis.prefix)
    when = dt.datetime(2026, 1, 7, 8, 30, 1, 250000, tzinfo=dt.UTC)
    batch = [
        Event(
            tenant_id="acme",
            kind="deferred",
            job_id=i,
            recipient=f"user{i}@example.com",
            reason="4.7.0",
            reply='451 4.7.0 "try later"\\ é',  # quotes, a backslash, non-ASCII: kept as sent
            at=when if i % 2 else None,
            data={"sender": "news@acme.example", "relay_ms": 1.5, "nested": {"a": [1, None]}},
            id=1000 + i,
            metadata={"order": i},
        )
        for i in range(300)
    ]
    assert await publish(redis_client, cfg.redis.prefix, batch[:3], maxlen=100)
    got = await redis_client.xrange(key)
    for (_, fields), event in zip(got, batch[:3], strict=True):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if event.at is None:  # stamped at publication
            assert dt.datetime.fromisoformat(decoded.pop("at")) > when
            expected = entry_fields(event)
            del expected["at"]
        else:
            assert decoded["at"] == "2026-01-07T08:30:01.250000+00:00"
            expected = entry_fields(event)
        assert decoded == expected
        assert from_json(decoded["event"]) == event
    assert await publish(redis_client, cfg.redis.prefix, batch[3:], maxlen=100)
    # Approximate trimming (whole stream nodes) to about 100 entries, once per batch.
    assert 100 <= await redis_client.xlen(key) < 300


async def test_an_idle_publisher_notices_new_events_and_another_instances_rounds(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis, acme: str
) -> None:
    key = stream_key(cfg.redis.prefix)
    one = Publisher(pool, redis_client, cfg.redis.prefix, cfg.events)
    two = Publisher(pool, redis_client, cfg.redis.prefix, cfg.events)
    assert await one.publish_once() == 0
    assert await one.publish_once() == 0  # idle: one probe, nothing after the cursor
    await write_committed(pool, [ev(1), ev(2)])
    assert await one.publish_once() == 2
    assert await one.publish_once() == 0  # idle again, at the new cursor
    assert await two.publish_once() == 0  # the cursor is shared
    await write_committed(pool, [ev(3)])
    assert await two.publish_once() == 1  # published by the other instance
    assert await one.publish_once() == 0  # rows after its idle position, none after the cursor
    await write_committed(pool, [ev(4)])
    assert await one.publish_once() == 1
    assert [int(f[b"job_id"]) for _, f in await redis_client.xrange(key)] == [1, 2, 3, 4]
