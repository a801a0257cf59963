"""Shaping for the daemon: the shared-Redis :class:`Shaper`, restored from PostgreSQL at start."""

from __future__ import annotations

import logging

import asyncpg
import redis.asyncio as aioredis

from engine import events
from engine.config import Config
from engine.errors import EngineError
from engine.periodic import Periodic
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

    def task(self, pool: asyncpg.Pool) -> Periodic:
        """Write pending events every second, and once more when the daemon stops."""

        async def flush() -> None:
            await self.flush(pool)

        return Periodic("shaping-events", flush, 1.0, at_start=False, on_stop=True)


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
