"""Per-node budgets shared by every engine instance: the IP warm-up counts, in Redis.

The warm-up cap of a relay node (engine/relay/ip_warmup.py) is a daily budget for the
node's IP, not for one daemon: every instance sending through that node takes from one counter
per node and UTC day, so N instances together relay at most the cap, and a restart keeps the
day's count. A key holds one node's day and expires two days later; its hash tag is the node,
so each script call touches one Redis Cluster slot.
"""

from __future__ import annotations

import datetime as dt

import redis.asyncio as aioredis

from engine.luascript import LuaScript

_TAKE = LuaScript("warmup_take", "engine.relay")
#: Seconds a day's counter lives (the day, plus slack for clocks and late give-backs).
TTL_S = 2 * 86400


class RedisWarmupLedger:
    """:class:`engine.relay.ip_warmup.WarmupLedger` on Redis (INCR under the cap)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, node: str, day: dt.date) -> str:
        return f"{self.prefix}:warmup:{{node:{node}}}:{day.isoformat()}"

    async def take(self, node: str, day: dt.date, cap: int) -> bool:
        """Count one message for ``node`` on ``day`` if it stays within ``cap``."""
        return bool(await _TAKE.call(self.client, [self.key(node, day)], cap, TTL_S))

    async def give_back(self, node: str, day: dt.date) -> None:
        """Undo one :meth:`take` (the message was not relayed)."""
        await self.client.decr(self.key(node, day))

    async def sent(self, node: str, day: dt.date) -> int:
        """Messages every instance together relayed through ``node`` on ``day``."""
        value = await self.client.get(self.key(node, day))
        return int(value or 0)


__all__ = ["TTL_S", "RedisWarmupLedger"]
