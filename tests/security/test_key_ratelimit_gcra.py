"""The per-key enqueue limit in Redis follows the engine's one GCRA (engine/gcra.py) exactly.

The Lua script takes ``n`` units all or nothing; for the same sequence of requests and times
it must allow and refuse exactly what the sans-IO reference does, with the same wait.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.gcra import GcraLimit, gcra_check
from engine.keys.ratelimit import EnqueueLimiter

# Rate 4/s: T = 250 ms, and times in steps of 125 ms, all exact in binary floating point, so
# the boundary cases (a full burst from idle, a request landing exactly on time) compare exactly.
RATE, BURST = 4.0, 6
START_MS = 1_700_000_000_000


async def test_lua_bucket_agrees_with_the_reference(redis_client: Any, redis_prefix: str) -> None:
    limiter = EnqueueLimiter(redis_client, redis_prefix, rate_per_s=RATE, burst=BURST)
    limit = GcraLimit(rate_per_s=RATE, burst=BURST)
    rng = random.Random(16)
    tat: float | None = None
    now_ms = START_MS
    allowed = refused = 0
    for _ in range(300):
        now_ms += 125 * rng.choice((0, 0, 1, 2, 3, 8))
        jobs = rng.choice((1, 1, 2, 3, 6, 20))
        wait_s = await limiter.allow("k1", jobs, now_ms=now_ms)
        expected = gcra_check(tat, now_ms / 1000, limit, min(jobs, BURST))
        assert (wait_s == 0.0) == expected.allowed, (now_ms, jobs, wait_s, expected)
        if expected.allowed:
            tat = expected.tat
            allowed += 1
        else:
            assert wait_s == pytest.approx(expected.retry_after_s, abs=1e-6)
            refused += 1
    assert allowed > 50 and refused > 50  # both paths were exercised


async def test_a_full_burst_from_idle_then_the_steady_rate(
    redis_client: Any, redis_prefix: str
) -> None:
    limiter = EnqueueLimiter(redis_client, redis_prefix, rate_per_s=RATE, burst=BURST)
    # A batch larger than the bucket costs the whole bucket and is taken from idle.
    assert await limiter.allow("k2", 50) == 0.0
    wait = await limiter.allow("k2", 1)
    assert 0 < wait <= 0.25
    # Another key has its own bucket.
    assert await limiter.allow("k3", BURST) == 0.0
    # The bucket is one string key (its TAT) that expires once the bucket is full again.
    ttl_ms = await redis_client.pttl(limiter.key("k2"))
    assert 0 < ttl_ms <= BURST * 250 + 1000
