"""Pausing a sender has one home (engine.senders.service): an automatic shaping pause and an
operator's resume go through the same functions as the CLI and the admin API, with PostgreSQL as
the truth and shaping's Redis key as its cache."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from engine.config import Config
from engine.dispatch.shaping import ShapingEventSink
from engine.senders import service as senders
from engine.shaping.clock import FakeClock
from engine.shaping.model import DeliverySignal, SignalKind
from engine.shaping.shaper import Shaper
from engine.store import tenants

T0 = 1_767_225_600.0 + 20 * 3600
SENDER = "news@shop.example"


async def _sender(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain) VALUES ('acme', $1, 'shop.example')",
        SENDER,
    )


async def test_an_automatic_pause_is_recorded_like_an_operators(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    await _sender(pool)
    sink = ShapingEventSink()
    shaper = Shaper(cfg, redis_client, clock=FakeClock(T0), on_event=sink)
    bounced = [DeliverySignal("acme", SENDER, "gmail", SignalKind.DELIVERED)] * 188
    bounced += [DeliverySignal("acme", SENDER, "gmail", SignalKind.HARD_BOUNCE)] * 12
    await shaper.feedback(bounced)
    await sink.flush(pool)
    assert sink.pending == []
    row = await pool.fetchrow("SELECT paused, paused_reason FROM oltp.senders")
    assert row["paused"] and "hard-bounce rate 6.00%" in row["paused_reason"]
    view = senders.PausedSenders(pool, ttl_s=0.0)
    await view.refresh()
    assert view.is_paused("acme", SENDER)
    event = await pool.fetchrow("SELECT kind, data FROM oltp.events")
    assert event["kind"] == "sender_paused" and event["data"]["reason"] == "hard_bounce_rate"
    assert await pool.fetchval("SELECT count(*) FROM oltp.audit_log") == 0  # not an operator

    # An operator resumes: truth, cache and reputation window are cleared, with an audit row.
    sender, _ = await senders.resume(pool, "acme", SENDER, actor="cli:ops", cache=shaper)
    assert sender is not None and not sender.paused
    assert await shaper.is_paused("acme", SENDER) is None
    await shaper.feedback([DeliverySignal("acme", SENDER, "gmail", SignalKind.DELIVERED)])
    assert await shaper.is_paused("acme", SENDER) is None  # the window started afresh
    await view.refresh()
    assert not view.is_paused("acme", SENDER)
    kinds = await pool.fetch("SELECT kind FROM oltp.events ORDER BY id")
    assert [r["kind"] for r in kinds] == ["sender_paused", "sender_resumed"]
    audit = await pool.fetch("SELECT actor, action, target FROM oltp.audit_log")
    assert [tuple(r.values()) for r in audit] == [("cli:ops", "sender.resume", SENDER)]


async def test_pausing_an_unknown_sender_changes_nothing(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    shaper = Shaper(cfg, redis_client, clock=FakeClock(T0))
    assert await senders.pause(pool, "acme", SENDER, actor="cli:ops", cache=shaper) is None
    assert await shaper.is_paused("acme", SENDER) is None
    assert await pool.fetchval("SELECT count(*) FROM oltp.events") == 0


async def test_an_automatic_pause_keeps_an_operators_reason(
    cfg: Config, pool: asyncpg.Pool, redis_client: aioredis.Redis
) -> None:
    # The operator paused it without the shaping cache (as `engine senders check` does for a
    # compliance block); shaping then pauses it too: the first reason stays, one event.
    await _sender(pool)
    await senders.pause(pool, "acme", SENDER, "abuse desk", actor="cli:ops")
    sink = ShapingEventSink()
    shaper = Shaper(cfg, redis_client, clock=FakeClock(T0), on_event=sink)
    await shaper.feedback([DeliverySignal("acme", SENDER, "gmail", SignalKind.HARD_BOUNCE)] * 200)
    assert len(sink.pending) == 1
    await sink.flush(pool)
    assert await pool.fetchval("SELECT paused_reason FROM oltp.senders") == "abuse desk"
    assert await pool.fetchval("SELECT count(*) FROM oltp.events") == 1
