"""Run the shaping Lua scripts: one pipelined round trip for many calls
(:func:`engine.luascript.call_many`), Redis failures as :class:`ShapingError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import ShapingError
from engine.luascript import ScriptCall, call_many


class ScriptRunner:
    """Sends many :class:`ScriptCall` values in one pipeline (non-transactional)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.round_trips = 0  # for tests: runs, each one pipeline (two after a NOSCRIPT)

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Results in call order; raises :class:`ShapingError` if Redis fails."""
        if not calls:
            return []
        self.round_trips += 1
        try:
            results = await call_many(self.client, calls)
        except RedisError as exc:
            raise ShapingError(
                f"shaping state in Redis is unreachable: {exc}", hint="check [redis] url"
            ) from exc
        for r in results:
            if isinstance(r, Exception):
                raise ShapingError(f"a shaping Lua script failed: {r}") from r
        return results


__all__ = ["ScriptCall", "ScriptRunner"]
