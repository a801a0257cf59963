"""Feedback against the real Redis (and PostgreSQL for persistence): a node answering 421 4.7.0
slows the sender x provider down and clean delivery brings it back; 6% hard bounces pause a
sender with an event saying why; warm-up moves a stage per clean day; state survives a flush."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.config import Config, RelayConfig
from engine.model import OutcomeKind
from engine.relay.pool import RelayPool
from engine.senders import service as sender_service
from engine.shaping.aimd import AimdBatch, AimdPolicy, AimdState, aimd_update
from engine.shaping.clock import SECONDS_PER_DAY, FakeClock
from engine.shaping.explain import explain, render
from engine.shaping.feedback import ShapingEvent
from engine.shaping.model import DeliverySignal, Level, ShapeRequest, SignalKind
from engine.shaping.shaper import Shaper
from engine.shaping.signals import from_outcome
from engine.store import tenants
from tests.conftest import REDIS_URL, make_config
from tests.fakes.mailu import FakeMailU

T0 = 1_767_225_600.0 + 20 * 3600  # 2026-01-01 20:00 UTC
SENDER = "news@shop.example"


def config(
    prefix: str, dsn: str = "postgresql://unused@127.0.0.1/unused", **shaping: Any
) -> Config:
    base: dict[str, Any] = {"warmup": False, "aimd_cooldown_s": 0.0}
    return make_config(dsn, prefix, shaping={**base, **shaping})


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    yield c
    await c.aclose()


def signal(
    kind: SignalKind, sender: str = SENDER, provider: str = "gmail", **kw: Any
) -> DeliverySignal:
    return DeliverySignal("acme", sender, provider, kind, **kw)


async def test_a_node_answering_421_slows_the_sender_down_then_it_recovers(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    cfg = config(redis_prefix, aimd_decrease=0.5, aimd_increase=0.05)
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    ceiling = shaper.provider_limits("gmail").rate_per_s
    with FakeMailU() as node:
        relay = RelayPool(RelayConfig(nodes=[node.relay_node()]))
        await relay.start(health_checks=False)
        try:
            node.set_reply("DATA", 421, "4.7.0 Try again later, closing connection", times=3)
            message = b"From: news@shop.example\r\nTo: bob@gm.example\r\nSubject: x\r\n\r\nhi\r\n"
            rates = []
            for _ in range(3):
                result = await relay.send(SENDER, "bob@gm.example", message)
                assert result.kind is OutcomeKind.DEFERRED and result.throttled
                s = from_outcome(
                    "acme",
                    SENDER,
                    "gmail",
                    result.kind,
                    throttled=result.throttled,
                    reply_code=result.reply_code,
                    enhanced_status=result.enhanced_status,
                )
                assert s is not None and s.kind is SignalKind.THROTTLED
                await shaper.feedback([s])
                rates.append(await shaper.rate("acme", SENDER, "gmail"))
            assert rates == pytest.approx([ceiling / 2, ceiling / 4, ceiling / 8])
            # The limiter enforces the lowered rate (shared through Redis).
            (status,) = [x for x in await shaper.peek(ShapeRequest("acme", SENDER, "gmail"))
                         if x.level is Level.PROVIDER]  # fmt: skip
            assert status.limit == pytest.approx(ceiling / 8, rel=1e-3)
            # Clean delivery grows it back, additively, up to the ceiling and no further.
            for _ in range(40):
                result = await relay.send(SENDER, "bob@gm.example", message)
                assert result.kind is OutcomeKind.RELAYED
                s = from_outcome("acme", SENDER, "gmail", result.kind)
                assert s is not None
                shaper.record(s)
            await shaper.flush()
            recovered = await shaper.rate("acme", SENDER, "gmail")
            assert ceiling / 8 < recovered < ceiling
            await shaper.feedback([signal(SignalKind.DELIVERED)] * 2000)
            assert await shaper.rate("acme", SENDER, "gmail") == ceiling
        finally:
            await relay.close()


async def test_decreases_respect_the_cooldown_across_instances(
    redis_prefix: str,
) -> None:
    cfg = config(redis_prefix, aimd_cooldown_s=60.0, aimd_decrease=0.5)
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
    try:
        a, b = (Shaper(cfg, c, clock=FakeClock(T0)) for c in clients)
        await a.feedback([signal(SignalKind.THROTTLED)])
        await b.feedback([signal(SignalKind.THROTTLED)] * 10)  # same episode, other instance
        assert await a.rate("acme", SENDER, "gmail") == a.provider_limits("gmail").rate_per_s / 2
    finally:
        for c in clients:
            await c.aclose()


async def test_six_percent_hard_bounces_pause_the_sender_with_an_event(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    events: list[ShapingEvent] = []
    shaper = Shaper(config(redis_prefix), client, clock=FakeClock(T0), on_event=events.append)
    signals = [signal(SignalKind.DELIVERED)] * 188 + [signal(SignalKind.HARD_BOUNCE)] * 12
    states = await shaper.feedback(signals)
    assert states[0].counts.attempts == 200 and states[0].counts.hard_bounces == 12
    assert [e.kind for e in events] == ["sender_paused"]
    assert "hard-bounce rate 6.00%" in events[0].message
    verdict = await shaper.is_paused("acme", SENDER)
    assert verdict is not None and verdict.reason == "hard_bounce_rate"
    # The pause itself is recorded and enforced by engine.senders (test_senders_service).
    # More bounces do not pause it twice; explain says why it is held.
    await shaper.feedback([signal(SignalKind.HARD_BOUNCE)])
    assert len(events) == 1
    e = await explain(shaper, "acme", SENDER, "bob@whatever.example")
    assert e.held_by is Level.PAUSED and e.paused is not None
    assert "PAUSED: hard-bounce rate 6.00%" in render(e)
    # An operator resumes: the window starts afresh, mail flows again.
    assert await shaper.resume("acme", SENDER)
    assert (await shaper.acquire([ShapeRequest("acme", SENDER, "outlook")]))[0].allowed
    await shaper.feedback([signal(SignalKind.DELIVERED)])
    assert await shaper.is_paused("acme", SENDER) is None
    assert [e.kind for e in events] == ["sender_paused"]  # the resume's event: engine.senders


async def test_one_bounce_in_three_does_not_pause(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    shaper = Shaper(config(redis_prefix), client, clock=FakeClock(T0))
    await shaper.feedback([signal(SignalKind.DELIVERED)] * 2 + [signal(SignalKind.HARD_BOUNCE)])
    assert await shaper.is_paused("acme", SENDER) is None


async def test_late_complaints_pause_without_counting_the_message_twice(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    shaper = Shaper(config(redis_prefix), client, clock=FakeClock(T0))
    await shaper.feedback([signal(SignalKind.DELIVERED)] * 1000)
    states = await shaper.feedback([signal(SignalKind.COMPLAINT, attempt=False)] * 3)
    assert states[0].counts.attempts == 1000
    assert await shaper.is_paused("acme", SENDER) is None  # 0.3% is the limit, not above it
    # A complaint whose provider could not be named still counts for the sender.
    await shaper.feedback([signal(SignalKind.COMPLAINT, provider="", attempt=False)])
    verdict = await shaper.is_paused("acme", SENDER)
    assert verdict is not None and verdict.reason == "complaint_rate"


async def test_warmup_advances_a_stage_after_a_clean_day_and_steps_back_after_a_bad_one(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock(T0)
    events: list[ShapingEvent] = []
    cfg = config(redis_prefix, warmup=True, warmup_plan=[50, 100, 500], default_rate_per_s=1000.0)
    shaper = Shaper(cfg, client, clock=clock, on_event=events.append)
    d = await shaper.acquire([ShapeRequest("acme", SENDER, "bulk.example")] * 60)
    assert sum(x.allowed for x in d) == 50
    await shaper.feedback([signal(SignalKind.DELIVERED)] * 50)
    assert events == []  # same day: nothing to evaluate yet
    clock.advance(SECONDS_PER_DAY)
    await shaper.feedback([signal(SignalKind.DELIVERED)])
    assert [e.kind for e in events] == ["warmup_advance"]
    assert "stage 1, 100/day per provider" in events[0].message
    state = await shaper.warmup_state("acme", SENDER)
    assert state is not None and state.stage == 1
    d = await shaper.acquire([ShapeRequest("acme", SENDER, "bulk.example")] * 120)
    assert sum(x.allowed for x in d) == 100
    # A day with 10% hard bounces (above 2 × 2%): back to stage 0.
    await shaper.feedback(
        [signal(SignalKind.DELIVERED)] * 80 + [signal(SignalKind.HARD_BOUNCE)] * 9
    )
    clock.advance(SECONDS_PER_DAY)
    await shaper.feedback([signal(SignalKind.DELIVERED)])
    assert [e.kind for e in events][-1] == "warmup_step_back"
    state = await shaper.warmup_state("acme", SENDER)
    assert state is not None and state.stage == 0


async def test_rates_warmup_and_pauses_survive_a_redis_flush(
    client: aioredis.Redis, redis_prefix: str, clean_db: str
) -> None:
    cfg = config(redis_prefix, dsn=clean_db, warmup=True)
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    await shaper.acquire([ShapeRequest("acme", SENDER, "gmail")])
    await shaper.feedback(
        [signal(SignalKind.THROTTLED), signal(SignalKind.BLOCKED, "b@shop.example")]
    )
    rate_before = await shaper.rate("acme", SENDER, "gmail")
    pool = await asyncpg.create_pool(clean_db, min_size=1, max_size=2)
    try:
        # The pause's truth is oltp.senders; the Redis copy is refilled from it.
        await tenants.add(pool, "acme")
        await pool.execute(
            "INSERT INTO oltp.senders (tenant_id, address, domain)"
            " VALUES ('acme', 'b@shop.example', 'shop.example')"
        )
        await sender_service.pause(
            pool, "acme", "b@shop.example", "manual", actor=None, cache=shaper
        )
        rates, senders = await shaper.persist(pool)
        assert rates == 2 and senders == 2
        assert await shaper.persist(pool) == (0, 0)  # nothing new since
        # "Redis flush" of this test's keys only (the shared Redis is never FLUSHALLed).
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}:*")]
        await client.delete(*keys)
        fresh = Shaper(cfg, client, clock=FakeClock(T0))
        assert await fresh.is_paused("acme", "b@shop.example") is None
        await fresh.restore(pool)
        assert await fresh.rate("acme", SENDER, "gmail") == pytest.approx(rate_before)
        assert await fresh.warmup_state("acme", SENDER) is not None
        paused = await fresh.is_paused("acme", "b@shop.example")
        assert paused is not None and paused.message == "manual"
        assert await fresh.is_paused("acme", SENDER) is None
    finally:
        await pool.close()


async def test_tenant_quotas_come_from_the_oltp_tier(
    client: aioredis.Redis, redis_prefix: str, pg_dsn: str
) -> None:
    shaper = Shaper(config(redis_prefix, dsn=pg_dsn), client, clock=FakeClock(T0))
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    tenant = f"quota-{redis_prefix}"
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO oltp.shaping_tenant_quotas (tenant_id, rate_per_s, weight)"
                " VALUES ($1, 2, 3)",
                tenant,
            )
        await shaper.refresh_quotas(pool)  # (the weight is the feeder's: test_queue)
        d = await shaper.acquire([ShapeRequest(tenant, SENDER, "gmail")] * 5)
        assert [x.level for x in d if not x.allowed] == [Level.TENANT] * 3
    finally:
        async with pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM oltp.shaping_tenant_quotas WHERE tenant_id = $1", tenant
            )
        await pool.close()


async def test_explain_names_the_level_that_holds_and_when(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    cfg = make_config(
        "postgresql://unused@127.0.0.1/unused",
        redis_prefix,
        shaping={"warmup": True, "burst_s": 1.0},
        dns={"overrides": {"gm.example": ["alt1.gmail-smtp-in.l.google.com"]}},
    )
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    e = await explain(shaper, "acme", SENDER, "bob@gm.example")
    assert e.allowed and e.provider.name == "gmail"
    assert [s.level for s in e.levels] == [Level.PROVIDER, Level.WARMUP]
    burst = int(shaper.provider_limits("gmail").rate_per_s)
    await shaper.acquire([ShapeRequest("acme", SENDER, "gmail")] * burst)
    e = await explain(shaper, "acme", SENDER, "bob@gm.example")
    assert not e.allowed and e.held_by is Level.PROVIDER
    assert 0 < e.retry_after_s <= 1 / shaper.provider_limits("gmail").rate_per_s + 0.002
    text = render(e)
    assert "provider gmail (table)" in text and "verdict: held by provider" in text
    assert "warm-up stage 0/30: 50/day" in text


async def test_lua_aimd_matches_the_python_reference(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock(T0)
    cfg = config(redis_prefix, aimd_cooldown_s=1.0, aimd_initial=0.5)
    shaper = Shaper(cfg, client, clock=clock)
    policy = AimdPolicy.from_config(cfg.shaping, shaper.provider_limits("gmail").rate_per_s)
    state: AimdState | None = None
    rng = random.Random(11)
    kinds = list(SignalKind)
    for _ in range(60):
        clock.advance(rng.choice([0.0, 0.3, 0.7, 1.5]))
        batch_kinds = [rng.choice(kinds[:1] * 6 + kinds) for _ in range(rng.randint(1, 30))]
        await shaper.feedback([signal(k) for k in batch_kinds])
        folded = AimdBatch()
        for k in batch_kinds:
            folded = folded.add(k, policy)
        state = aimd_update(state, folded, clock.now, policy)
        assert await shaper.rate("acme", SENDER, "gmail") == pytest.approx(state.rate, rel=1e-9)


async def test_background_loop_flushes_recorded_feedback_and_persists(
    client: aioredis.Redis, redis_prefix: str, pg_dsn: str
) -> None:
    shaper = Shaper(config(redis_prefix, dsn=pg_dsn), client)
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    stop = asyncio.Event()
    task = asyncio.create_task(shaper.run(stop, pool, flush_s=0.02, persist_s=0.05))
    try:
        shaper.record(signal(SignalKind.THROTTLED, sender="loop@shop.example"))
        shaper.record(None)  # outcomes that say nothing are ignored
        for _ in range(100):
            await asyncio.sleep(0.02)
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT rate_per_s FROM oltp.shaping_rates WHERE sender = 'loop@shop.example'"
                )
            if row is not None:
                break
        assert row is not None
        assert row["rate_per_s"] == shaper.provider_limits("gmail").rate_per_s / 2
    finally:
        stop.set()
        await task
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM oltp.shaping_rates WHERE sender = 'loop@shop.example'")
            await conn.execute(
                "DELETE FROM oltp.shaping_senders WHERE sender = 'loop@shop.example'"
            )
        await pool.close()
