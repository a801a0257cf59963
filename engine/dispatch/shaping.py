"""Shaping for the daemon: the shared-Redis :class:`Shaper`, restored from PostgreSQL at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import redis.asyncio as aioredis

from engine import events
from engine.config import Config
from engine.errors import EngineError
from engine.shaping.feedback import ShapingEvent
from engine.shaping.shaper import Shaper

log = logging.getLogger("engine.shaping")


class ShapingEventSink:
    """Turns shaping's own decisions (auto-pause at a complaint or bounce rate, resume) into
    tenant-visible events; warm-up moves are logged by shaping itself."""

    KINDS = ("sender_paused", "sender_resumed")

    def __init__(self) -> None:
        self.pending: list[ShapingEvent] = []

    def __call__(self, event: ShapingEvent) -> None:
        if event.kind in self.KINDS:
            self.pending.append(event)

    async def flush(self, pool: asyncpg.Pool) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        async with pool.acquire() as conn:
            await events.write(
                conn,
                [
                    events.Event(
                        tenant_id=e.tenant_id,
                        kind=e.kind,
                        reason=e.message,
                        data={"sender": e.sender, **e.data},
                    )
                    for e in batch
                ],
            )

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            try:
                await self.flush(pool)
            except Exception as exc:  # the loop must survive any error (cf. the outcome writer)
                log.warning("shaping events not written; retrying", extra={"error": repr(exc)})


async def build_shaper(
    cfg: Config,
    client: aioredis.Redis,
    pool: asyncpg.Pool,
    on_event: ShapingEventSink | None = None,
) -> Shaper:
    """A shaper whose adaptive rates and warm-up state survive restarts (oltp tier)."""
    shaper = Shaper(cfg, client, on_event=on_event)
    try:
        await shaper.restore(pool)
        await shaper.refresh_quotas(pool)
    except (EngineError, asyncpg.PostgresError, OSError) as exc:
        # Start with the configured ceilings rather than not at all; rates adapt again.
        log.warning("shaping state not restored; starting fresh", extra={"error": str(exc)})
    return shaper
