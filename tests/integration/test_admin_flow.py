"""Operator actions over HTTP change what reaches the relay: pause/resume, cancel, drain, /readyz.

A small pipeline (feeder + dispatcher, as the daemon wires them) runs against real PostgreSQL and
Redis and a fake MailU node, with the admin app in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from engine.admin import AdminContext, build_app
from engine.config import Config
from engine.dispatch.worker import Dispatcher
from engine.queue import feeder as feeder_mod
from engine.servers import ThrowawayRedis
from engine.shaping.model import ShapeDecision, ShapeRequest
from engine.shaping.shaper import Shaper
from engine.store import tenants
from engine.tenancy import domains as sending_domains
from tests.conftest import REDIS_URL, make_config
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU
from tests.integration.test_admin_api import TOKEN, call, close_context, job, make_context


def pipeline_config(
    dsn: str,
    prefix: str,
    node: FakeMailU,
    redis: dict[str, object] | None = None,
    **queue: object,
) -> Config:
    return make_config(
        dsn,
        prefix,
        relay={
            "nodes": [msgspec.to_builtins(node.relay_node("n1", max_connections=4))],
            "connect_timeout_s": 1.0,
            "command_timeout_s": 3.0,
        },
        queue={
            "feeder_interval_s": 0.1,
            "lease_s": 5.0,
            "retry_base_s": 0.2,
            "retry_max_s": 1.0,
            **queue,
        },
        redis=redis or {},
        shaping={"enabled": False},
        dkim={"enabled": False},
        admin={"token": TOKEN},
    )


@dataclass
class Pipeline:
    client: TestClient[Any, Any]
    ctx: AdminContext
    stop: asyncio.Event
    dispatcher: asyncio.Task[None]


@contextlib.asynccontextmanager
async def pipeline(
    cfg: Config, pool: asyncpg.Pool, shaper: Shaper | None = None
) -> AsyncIterator[Pipeline]:
    stop, halt = asyncio.Event(), asyncio.Event()
    ctx, relay = await make_context(cfg, pool, drain=stop.set)
    ctx.paused_refresh_s = 0.1
    ctx.shaper = shaper
    dispatcher = Dispatcher(
        cfg=cfg,
        pool=pool,
        streams=ctx.streams,
        relay=relay,
        consumer="admin-flow",
        shaper=shaper,
    )
    dispatcher.paused.ttl_s = 0.1  # the daemon refreshes every 5 s; tests need not wait that long
    feeder = feeder_mod.Feeder(pool, ctx.streams, cfg.queue, cfg.database.dsn)
    feeding = asyncio.create_task(feeder.run(halt))
    running = asyncio.create_task(dispatcher.run(stop))
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        yield Pipeline(client, ctx, stop, running)
    finally:
        stop.set()
        halt.set()
        await asyncio.wait_for(asyncio.gather(running, feeding), 20)
        await client.close()
        await close_context(ctx, relay)


async def wait_state(pool: asyncpg.Pool, job_id: int, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    current = None
    while time.monotonic() < deadline:
        current = await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id)
        if current == state:
            return
        await asyncio.sleep(0.05)
    row = await pool.fetchrow("SELECT * FROM queue.jobs WHERE id = $1", job_id)
    raise AssertionError(f"job {job_id} is {current}, not {state}: {dict(row or {})}")


async def post(client: TestClient[Any, Any], *jobs: dict[str, object]) -> list[int]:
    out = await call(client, "POST", "/v1/messages", status=200, json=list(jobs))
    assert out["rejected"] == 0, out
    return [r["job_id"] for r in out["results"]]


async def test_pause_holds_mail_and_resume_releases_it(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    async with pipeline(pipeline_config(clean_db, redis_prefix, mailu), pool) as p:
        (first,) = await post(p.client, job(1))
        await wait_state(pool, first, "relayed")
        await call(p.client, "POST", "/v1/senders/news@acme.example/pause", status=200)
        await asyncio.sleep(0.3)  # the dispatcher's paused-sender refresh
        (held,) = await post(p.client, job(2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            row = await pool.fetchrow(
                "SELECT state, last_reply FROM queue.jobs WHERE id = $1", held
            )
            if row["last_reply"] == "sender is paused":
                break
            await asyncio.sleep(0.05)
        assert (row["state"], row["last_reply"]) == ("queued", "sender is paused")
        assert mailu.count() == 1
        out = await call(p.client, "POST", "/v1/senders/news@acme.example/resume", status=200)
        assert out["released"] == 1
        await wait_state(pool, held, "relayed")
        assert mailu.count() == 2 and not mailu.duplicates()


async def test_a_paused_sender_is_held_once_for_the_one_hold_and_uses_no_shaping_units(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    base = pipeline_config(clean_db, redis_prefix, mailu)
    cfg = msgspec.structs.replace(
        base,
        shaping=msgspec.structs.replace(
            base.shaping, enabled=True, warmup=False, paused_retry_s=120.0
        ),
    )
    client = aioredis.Redis.from_url(REDIS_URL)
    asked = 0

    class CountingShaper(Shaper):
        async def acquire(self, requests: Sequence[ShapeRequest]) -> list[ShapeDecision]:
            nonlocal asked
            asked += len(requests)
            return await super().acquire(requests)

    try:
        shaper = CountingShaper(cfg, client)
        async with pipeline(cfg, pool, shaper) as p:
            (first,) = await post(p.client, job(1))
            await wait_state(pool, first, "relayed")
            await call(p.client, "POST", "/v1/senders/news@acme.example/pause", status=200)
            assert await shaper.is_paused("acme", "news@acme.example") is not None  # the cache
            await asyncio.sleep(0.3)  # the dispatcher's paused-sender refresh
            asked = 0
            (held,) = await post(p.client, job(2))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                row = await pool.fetchrow(
                    "SELECT state, last_reply, next_attempt_at - now() AS wait"
                    " FROM queue.jobs WHERE id = $1",
                    held,
                )
                if row["last_reply"] == "sender is paused":
                    break
                await asyncio.sleep(0.05)
            assert (row["state"], row["last_reply"]) == ("queued", "sender is paused")
            assert dt.timedelta(seconds=110) < row["wait"] <= dt.timedelta(seconds=120)
            assert asked == 0  # the held job took no shaping unit
            out = await call(p.client, "POST", "/v1/senders/news@acme.example/resume", status=200)
            assert out["released"] == 1
            assert await shaper.is_paused("acme", "news@acme.example") is None
            await wait_state(pool, held, "relayed")
            assert mailu.count() == 2 and not mailu.duplicates()
    finally:
        await client.aclose()


async def test_cancel_prevents_sending(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    async with pipeline(pipeline_config(clean_db, redis_prefix, mailu), pool) as p:
        keep, drop = await post(p.client, job(1, send_at=soon), job(2, send_at=soon))
        out = await call(p.client, "DELETE", f"/v1/messages/{drop}", status=200)
        assert out["state"] == "cancelled"
        await wait_state(pool, keep, "relayed")
        await asyncio.sleep(0.3)
        assert [m.rcpt_tos for m in mailu.received] == [("user1@example.com",)]
        await call(p.client, "DELETE", f"/v1/messages/{keep}", status=409)
        found = await call(p.client, "GET", "/v1/messages?state=cancelled", status=200)
        assert [m["id"] for m in found["messages"]] == [drop]


async def test_drain_finishes_in_flight_mail_and_leaves_nothing_sending(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    mailu.set_delay("DATA", 0.05)
    # A small in-flight window, so the drain leaves most of the batch queued for later.
    cfg = pipeline_config(clean_db, redis_prefix, mailu, max_in_flight=8, batch_size=8)
    async with pipeline(cfg, pool) as p:
        await post(p.client, *(job(i) for i in range(300)))
        assert await mailu.wait_for_async(20, timeout=10)
        assert await call(p.client, "POST", "/v1/drain", status=202) == {"draining": True}
        await asyncio.wait_for(p.dispatcher, 20)  # the dispatcher returns once drained
        states = dict(await pool.fetch("SELECT state, count(*) FROM queue.jobs GROUP BY state"))
        assert states.get("sending", 0) == 0
        assert states.get("relayed", 0) == mailu.count() < 300
        assert not mailu.duplicates()
        ready = await call(p.client, "GET", "/readyz", status=503)
        assert ready["draining"] is True


async def test_readyz_503_when_redis_stops(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    with ThrowawayRedis() as server:
        redis = {"url": server.url, "socket_timeout_s": 1.0}
        cfg = pipeline_config(clean_db, redis_prefix, mailu, redis)
        ctx, relay = await make_context(cfg, pool)
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
        await client.start_server()
        try:
            out = await call(client, "GET", "/readyz", status=200)
            assert out["checks"]["redis"] == "ok"
            server.stop()
            out = await call(client, "GET", "/readyz", status=503)
            assert out["checks"]["redis"].startswith("error:")
            assert out["checks"]["postgresql"] == "ok" and out["checks"]["relay"].endswith(
                "reachable"
            )
            # a route that needs Redis answers 503 with a message, not a crash
            out = await call(client, "GET", "/v1/queues", status=503)
            assert "unavailable" in out["error"]
        finally:
            await client.close()
            await close_context(ctx, relay)


async def test_pause_before_first_mail_is_404(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    """A sender exists only once a tenant enqueued from it: pausing earlier says so."""
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    async with pipeline(pipeline_config(clean_db, redis_prefix, mailu), pool) as p:
        out = await call(p.client, "POST", "/v1/senders/new@acme.example/pause", status=404)
        assert "created when a tenant first enqueues" in out["error"]


async def test_operator_actions_are_audited_and_evented(
    pool: asyncpg.Pool, cfg: Config, mailu: FakeMailU
) -> None:
    from tests.integration.test_admin_api import admin_config

    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    acfg = admin_config(cfg.database.dsn, cfg.redis.prefix, mailu)
    ctx, relay = await make_context(acfg, pool)
    try:
        async with TestClient(TestServer(build_app(ctx, token=TOKEN))) as client:
            out = await call(client, "POST", "/v1/messages", status=200, json=[job(1)])
            job_id = out["results"][0]["job_id"]
            await call(client, "DELETE", f"/v1/messages/{job_id}", status=200)
            await call(client, "GET", "/v1/queues", status=200)  # reads are not audited
    finally:
        await close_context(ctx, relay)
    audit = await pool.fetch("SELECT actor, action, target FROM oltp.audit_log ORDER BY id")
    assert [(a["actor"], a["action"]) for a in audit] == [
        ("admin-api", "POST /v1/messages"),
        ("admin-api", "DELETE /v1/messages/{id}"),
    ]
    assert audit[1]["target"] == f"id={job_id}"
    kinds = [r["kind"] for r in await pool.fetch("SELECT kind FROM oltp.events ORDER BY id")]
    assert kinds == ["queued", "cancelled"]
