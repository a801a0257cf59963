"""Shaping for the daemon: the shared-Redis :class:`Shaper`, restored from PostgreSQL at start."""

from __future__ import annotations

import logging

import asyncpg
import redis.asyncio as aioredis

from engine.config import Config
from engine.errors import EngineError
from engine.periodic import Periodic
from engine.senders import service as senders
from engine.shaping.feedback import ShapingEvent
from engine.shaping.shaper import Shaper

log = logging.getLogger("engine.shaping")


class ShapingEventSink:
    """Records shaping's automatic pauses (complaint or bounce rate over the threshold) through
    :mod:`engine.senders.service`, like an operator's: ``oltp.senders`` and the tenant's event.
    Shaping has already set its Redis cache of the pause; warm-up moves are only logged."""

    def __init__(self) -> None:
        self.pending: list[ShapingEvent] = []

    def __call__(self, event: ShapingEvent) -> None:
        if event.kind == "sender_paused":
            self.pending.append(event)

    async def flush(self, pool: asyncpg.Pool) -> None:
        """Record the pending pauses; on an error the rest stay pending for the next flush."""
        while self.pending:
            e = self.pending[0]
            sender = await senders.pause(
                pool, e.tenant_id, e.sender, e.message, actor=None, detail=e.data, if_running=True
            )
            if sender is None:
                log.warning(
                    "shaping paused a sender unknown to oltp.senders",
                    extra={"tenant": e.tenant_id, "sender": e.sender},
                )
            self.pending.pop(0)

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
