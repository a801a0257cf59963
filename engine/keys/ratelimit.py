"""Per-key enqueue rate limit: a token bucket in Redis, shared by every engine instance.

Each accepted job costs one token; a key's bucket holds at most ``burst`` tokens and refills at
``rate_per_s``. One script call per request (not per job). A batch larger than the bucket costs
the whole bucket, so a full-size batch is never refused forever.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

# KEYS[1] bucket; ARGV rate/s, burst, cost. Returns {allowed 0|1, seconds to wait as a string}.
# Redis' own clock (TIME) keeps instances with skewed clocks consistent.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(wait)}
"""


class EnqueueLimiter:
    """``allow(prefix, jobs)`` → seconds to wait (0: go ahead, tokens taken)."""

    def __init__(
        self, client: aioredis.Redis, key_prefix: str, *, rate_per_s: float, burst: int
    ) -> None:
        self._client = client
        self._key_prefix = key_prefix
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._script = client.register_script(_SCRIPT)

    async def allow(self, api_key_prefix: str, jobs: int) -> float:
        """0 when the batch may go in now, else how many seconds until it may (nothing taken)."""
        cost = max(1, min(jobs, self.burst))
        bucket = f"{self._key_prefix}:ratelimit:key:{api_key_prefix}"
        allowed, wait = await self._script(
            keys=[bucket], args=[repr(self.rate_per_s), self.burst, cost]
        )
        if int(allowed):
            return 0.0
        return max(0.001, float(wait))


def retry_after(wait_s: float) -> str:
    """The Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait_s)))
