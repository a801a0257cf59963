"""A Redis Lua script shipped with a package (``engine/<package>/lua/<name>.lua``), called by
its SHA: the SHA is computed locally, calls go out as plain EVALSHA and only a ``NOSCRIPT``
reply (first use, or after a Redis restart/flush) loads the script.

Queue-neutral on purpose: the queue, the event stream and shaping each ship their own scripts
and none of them imports another for this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError


class LuaScript:
    """The script ``lua/<name>.lua`` of ``package`` (e.g. ``engine.queue``)."""

    def __init__(self, name: str, package: str) -> None:
        self.name = name
        self.source = resources.files(package).joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def call(self, client: aioredis.Redis, keys: Sequence[str], *args: Any) -> Any:
        """One EVALSHA; on ``NOSCRIPT`` (first use, or Redis restarted / flushed its scripts)
        the script is loaded and the call made once more. Redis errors propagate."""
        return (await call_all(client, [ScriptCall(self, keys, args)]))[0]


class ScriptCall:
    """One invocation: the script, the keys it touches (one hash tag) and its arguments."""

    __slots__ = ("args", "keys", "script")

    def __init__(self, script: LuaScript, keys: Sequence[str | bytes], args: Sequence[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args = args


async def call_many(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Many EVALSHAs in one pipeline (non-transactional; on a Redis Cluster one per node, each
    call routed by its keys). Results in call order; a call that failed in Redis has its
    exception in its place. Scripts a ``NOSCRIPT`` reply names are loaded and their calls sent
    once more. Connection errors propagate."""
    results = await _send(client, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i].script.name: calls[i].script for i in missing}.values():
            await client.script_load(script.source)
        again = await _send(client, [calls[i] for i in missing])
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


async def call_all(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """:func:`call_many`, raising the first error a call met in Redis."""
    results = await call_many(client, calls)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


async def _send(client: aioredis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    if not calls:
        return []
    if len(calls) == 1:
        c = calls[0]
        try:
            return [await client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)]
        except ResponseError as exc:  # NOSCRIPT, or the script failed: as in a pipeline
            return [exc]
    pipe = client.pipeline(transaction=False)
    for c in calls:
        # The generic form: a Redis Cluster pipeline refuses its evalsha() method but routes
        # EVALSHA by its keys (one hash tag per call, so one slot).
        pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
    return list(await pipe.execute(raise_on_error=False))
