"""The limit hierarchy against the real Redis: exact GCRA, hierarchy order, warm-up caps, pauses,
relay-node buckets (single Redis and cluster-style split), one round trip per batch, and two
daemon instances sharing one Redis holding the combined rate to the configured limit."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine.config import Config
from engine.errors import ShapingError
from engine.gcra import GcraBucket, GcraLimit
from engine.shaping.clock import SECONDS_PER_DAY, FakeClock
from engine.shaping.model import Level, ShapeRequest
from engine.shaping.shaper import Shaper
from tests.conftest import REDIS_URL, make_config

T0 = 1_767_225_600.0 + 3600  # 2026-01-01 01:00 UTC: far from midnight


def config(prefix: str, **shaping: Any) -> Config:
    base: dict[str, Any] = {"warmup": False, "burst_s": 1.0}
    return make_config(
        "postgresql://unused@127.0.0.1/unused",
        prefix,
        shaping={**base, **shaping},
        dns={"overrides": {"gm.example": ["gmail-smtp-in.l.google.com"]}},
    )


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    yield c
    await c.aclose()


def req(
    sender: str = "news@shop.example", provider: str = "p", tenant: str = "acme", **kw: Any
) -> ShapeRequest:
    return ShapeRequest(tenant, sender, provider, **kw)


async def test_lua_gcra_matches_the_python_reference(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock(T0)
    cfg = config(redis_prefix, default_rate_per_s=10.0, burst_s=0.5)
    shaper = Shaper(cfg, client, clock=clock)
    reference = GcraBucket(GcraLimit(rate_per_s=10.0, burst=5), clock)
    rng = random.Random(7)
    for _ in range(300):
        # Gaps off the 100 ms grid: no request lands exactly on a boundary, where seconds (Python)
        # and milliseconds (Lua) may round differently.
        clock.advance(rng.choice([0.0, 0.0, 0.013, 0.047, 0.1031, 0.317]))
        (got,) = await shaper.acquire([req()])
        want = reference.try_acquire()
        assert got.allowed == want.allowed
        if not want.allowed:
            assert got.level is Level.PROVIDER
            assert got.retry_after_s == pytest.approx(want.retry_after_s, abs=0.0011)


async def test_tenant_limit_binds_before_the_provider_limit(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    cfg = config(redis_prefix, tenant_rate_per_s=5.0, default_rate_per_s=50.0)
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    senders = [f"s{i}@shop.example" for i in range(3)]
    decisions = await shaper.acquire([req(senders[i % 3]) for i in range(30)])
    assert sum(d.allowed for d in decisions) == 5
    held = [d for d in decisions if not d.allowed]
    assert {d.level for d in held} == {Level.TENANT}
    assert all(0 < d.retry_after_s <= 5 for d in held)
    # Another tenant is not affected by acme's limit.
    other = await shaper.acquire([req(tenant="globex") for _ in range(5)])
    assert all(d.allowed for d in other)


async def test_sender_domain_and_address_levels(client: aioredis.Redis, redis_prefix: str) -> None:
    cfg = config(redis_prefix, sender_domain_rate_per_s=4.0, sender_rate_per_s=2.0)
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    d = await shaper.acquire([req("a@shop.example")] * 3 + [req("b@shop.example")] * 3)
    assert [x.allowed for x in d] == [True, True, False, True, True, False]
    assert d[2].level is Level.SENDER
    d = await shaper.acquire([req("c@shop.example")])
    assert d[0].level is Level.SENDER_DOMAIN


async def test_held_requests_consume_nothing_and_go_after_the_wait(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock(T0)
    shaper = Shaper(config(redis_prefix, default_rate_per_s=2.0), client, clock=clock)
    first = await shaper.acquire([req()] * 2)
    assert all(d.allowed for d in first)
    for _ in range(5):  # retried too early many times: never pushes the wait further out
        (held,) = await shaper.acquire([req()])
        assert not held.allowed and held.retry_after_s == pytest.approx(0.5, abs=0.002)
    clock.advance(0.5)
    assert (await shaper.acquire([req()]))[0].allowed


async def test_warmup_cap_holds_until_the_next_utc_day(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = FakeClock(T0)
    cfg = config(redis_prefix, warmup=True, warmup_plan=[3, 10], default_rate_per_s=100.0)
    shaper = Shaper(cfg, client, clock=clock)
    d = await shaper.acquire([req(provider="gmail")] * 4 + [req(provider="outlook")])
    assert [x.allowed for x in d] == [True, True, True, False, True]  # the cap is per provider
    assert d[3].level is Level.WARMUP
    assert d[3].retry_after_s == pytest.approx(SECONDS_PER_DAY - 3600, abs=1)
    state = await shaper.warmup_state("acme", "news@shop.example")
    assert state is not None and state.stage == 0
    clock.advance(SECONDS_PER_DAY)
    assert (await shaper.acquire([req(provider="gmail")]))[0].allowed


async def test_warmup_false_exempts_new_senders(client: aioredis.Redis, redis_prefix: str) -> None:
    cfg = config(redis_prefix, warmup=False, warmup_plan=[1], default_rate_per_s=100.0)
    shaper = Shaper(cfg, client, clock=FakeClock(T0))
    assert all(d.allowed for d in await shaper.acquire([req()] * 20))
    assert await shaper.warmup_state("acme", "news@shop.example") is None


async def test_the_pause_cache_lives_next_to_the_limits(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    # Holding a paused sender is the dispatcher's (engine.senders); the limiter has no pause
    # level, and shaping keeps the reason for explain and the reputation scripts.
    shaper = Shaper(config(redis_prefix), client, clock=FakeClock(T0))
    assert await shaper.pause("acme", "News@Shop.example", "abuse desk request")
    verdict = await shaper.is_paused("acme", "news@shop.example")
    assert verdict is not None and verdict.message == "abuse desk request"
    assert (await shaper.acquire([req()]))[0].allowed
    assert await shaper.resume("acme", "news@shop.example")
    assert await shaper.is_paused("acme", "news@shop.example") is None


@pytest.mark.parametrize("split", [False, True], ids=["single-redis", "cluster-split"])
async def test_node_bucket_and_refund_of_what_a_node_refuses(
    client: aioredis.Redis, redis_prefix: str, split: bool
) -> None:
    cfg = config(redis_prefix, node_rate_per_s=2.0, default_rate_per_s=1.0)
    shaper = Shaper(cfg, client, clock=FakeClock(T0), split_nodes=split)
    senders = [f"s{i}@shop.example" for i in range(5)]
    d = await shaper.acquire([req(s, node="mailu-1") for s in senders])
    assert [x.allowed for x in d] == [True, True, False, False, False]
    assert {x.level for x in d[2:]} == {Level.NODE}
    # The refused senders' own buckets (1/s, burst 1) were not consumed (or were refunded).
    again = await shaper.acquire([req(s) for s in senders])
    assert [x.allowed for x in again] == [False, False, True, True, True]


async def test_a_multi_tenant_batch_is_one_round_trip(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    shaper = Shaper(config(redis_prefix, tenant_rate_per_s=1000.0), client)
    batch = [req(f"s{i % 16}@t{i % 8}.example", tenant=f"t{i % 8}") for i in range(256)]
    await shaper.acquire(batch)  # loads the script (NOSCRIPT → SCRIPT LOAD → retry)
    assert shaper.runner is not None
    before = shaper.runner.round_trips
    decisions = await shaper.acquire(batch)
    assert shaper.runner.round_trips - before == 1
    assert len(decisions) == 256


async def test_recipient_domains_are_rolled_up_and_dns_failures_do_not_wait(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    async def failing_dns(domain: str) -> list[str]:
        raise ShapingError("SERVFAIL")

    shaper = Shaper(config(redis_prefix), client, mx_lookup=failing_dns)
    started = time.perf_counter()
    d = await shaper.acquire(
        [
            ShapeRequest("acme", "a@shop.example", recipient_domain="gm.example"),
            ShapeRequest("acme", "a@shop.example", recipient_domain="down.example"),
        ]
    )
    assert time.perf_counter() - started < 0.5
    assert [x.provider for x in d] == ["gmail", "down.example"]
    assert all(x.allowed for x in d)


async def test_two_instances_share_one_limit(redis_prefix: str) -> None:
    """Two daemons, one Redis: together they hold the configured rate (±10%)."""
    rate, duration = 40.0, 2.5
    cfg = config(redis_prefix, default_rate_per_s=rate, burst_s=0.25)
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
    shapers = [Shaper(cfg, c) for c in clients]  # server clock: no fake time here
    allowed = [0, 0]

    async def instance(i: int) -> None:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            decisions = await shapers[i].acquire([req()] * 16)
            allowed[i] += sum(d.allowed for d in decisions)
            held = [d.retry_after_s for d in decisions if not d.allowed]
            await asyncio.sleep(min(held, default=0.0) if held else 0.0)

    try:
        await asyncio.gather(instance(0), instance(1))
    finally:
        for c in clients:
            await c.aclose()
    expected = rate * 0.25 + rate * duration  # burst + steady rate
    assert abs(sum(allowed) - expected) <= 0.1 * expected, allowed
    assert min(allowed) > 0.2 * expected  # both instances got work through
