"""Run the shaping Lua scripts: EVALSHA, one pipelined round trip for many calls.

redis-py's ``Script`` objects re-check ``SCRIPT EXISTS`` on every pipeline execution, an extra
round trip per batch; here calls go out as plain EVALSHA (:class:`engine.luascript.LuaScript`
knows each SHA) and only a ``NOSCRIPT`` reply (first use, or after a Redis restart/flush)
triggers a ``SCRIPT LOAD`` and a retry of the calls that missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from engine.errors import ShapingError
from engine.luascript import LuaScript


class ScriptCall:
    """One invocation: the keys it touches (one hash tag) and its arguments."""

    __slots__ = ("args", "keys", "script")

    def __init__(self, script: LuaScript, keys: Sequence[str | bytes], args: Sequence[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args = args


class ScriptRunner:
    """Sends many :class:`ScriptCall` values in one pipeline (non-transactional)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.round_trips = 0  # for tests and metrics: pipelines sent

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Results in call order; raises :class:`ShapingError` if Redis fails."""
        if not calls:
            return []
        try:
            results = await self._send(calls)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                for script in {calls[i].script.name: calls[i].script for i in missing}.values():
                    await self.client.script_load(script.source)
                again = await self._send([calls[i] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    results[i] = r
        except RedisError as exc:
            raise ShapingError(
                f"shaping state in Redis is unreachable: {exc}", hint="check [redis] url"
            ) from exc
        for r in results:
            if isinstance(r, Exception):
                raise ShapingError(f"a shaping Lua script failed: {r}") from r
        return results

    async def _send(self, calls: Sequence[ScriptCall]) -> list[Any]:
        self.round_trips += 1
        if len(calls) == 1:
            c = calls[0]
            try:
                return [await self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            # The generic form: a Redis Cluster pipeline refuses its evalsha() method but routes
            # EVALSHA by its keys (one hash tag per call, so one slot).
            pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))
