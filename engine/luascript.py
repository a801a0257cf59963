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
from redis.exceptions import NoScriptError


class LuaScript:
    """The script ``lua/<name>.lua`` of ``package`` (e.g. ``engine.queue``)."""

    def __init__(self, name: str, package: str) -> None:
        self.name = name
        self.source = resources.files(package).joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def call(self, client: aioredis.Redis, keys: Sequence[str], *args: Any) -> Any:
        """One EVALSHA; on ``NOSCRIPT`` (first use, or Redis restarted / flushed its scripts)
        the script is loaded and the call made once more. Redis errors propagate."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)
