"""Shaping for the daemon: the shared-Redis :class:`Shaper`, restored from PostgreSQL at start."""

from __future__ import annotations

import logging

import asyncpg
import redis.asyncio as aioredis

from engine.config import Config
from engine.errors import EngineError
from engine.shaping.shaper import Shaper

log = logging.getLogger("engine.shaping")


async def build_shaper(cfg: Config, client: aioredis.Redis, pool: asyncpg.Pool) -> Shaper:
    """A shaper whose adaptive rates and warm-up state survive restarts (oltp tier)."""
    shaper = Shaper(cfg, client)
    try:
        await shaper.restore(pool)
        await shaper.refresh_quotas(pool)
    except (EngineError, asyncpg.PostgresError, OSError) as exc:
        # Start with the configured ceilings rather than not at all; rates adapt again.
        log.warning("shaping state not restored; starting fresh", extra={"error": str(exc)})
    return shaper
