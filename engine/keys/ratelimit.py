"""Per-key enqueue rate limit: a GCRA bucket in Redis, shared by every engine instance.

Each accepted job costs one unit; a key's bucket holds at most ``burst`` units and refills at
``rate_per_s``. The maths are the engine's one GCRA (engine/gcra.py); ``lua/gcra_take.lua`` runs
them inside Redis on Redis' clock, taking a whole request's units or none. One script call per
request (not per job). A batch larger than the bucket costs the whole bucket, so a full-size
batch is never refused forever.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from engine.gcra import GcraLimit
from engine.luascript import LuaScript

_TAKE = LuaScript("gcra_take", "engine.keys")


class EnqueueLimiter:
    """``allow(prefix, jobs)`` → seconds to wait (0: go ahead, units taken)."""

    def __init__(
        self, client: aioredis.Redis, key_prefix: str, *, rate_per_s: float, burst: int
    ) -> None:
        self._client = client
        self._key_prefix = key_prefix
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._limit = GcraLimit(rate_per_s=rate_per_s, burst=burst)

    def key(self, api_key_prefix: str) -> str:
        """The Redis key holding one API key's bucket (its TAT)."""
        return f"{self._key_prefix}:ratelimit:tat:{api_key_prefix}"

    async def allow(self, api_key_prefix: str, jobs: int, *, now_ms: float = -1) -> float:
        """0 when the batch may go in now, else how many seconds until it may (nothing taken).

        ``now_ms`` is for tests; by default the bucket runs on Redis' clock."""
        cost = max(1, min(jobs, self.burst))
        allowed, wait_ms = await _TAKE.call(
            self._client,
            [self.key(api_key_prefix)],
            repr(now_ms),
            repr(self._limit.interval_s * 1000),
            repr(self._limit.tolerance_s * 1000),
            cost,
        )
        if int(allowed):
            return 0.0
        return max(0.001, float(wait_ms) / 1000)


def retry_after(wait_s: float) -> str:
    """The Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait_s)))
