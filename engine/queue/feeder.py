"""The feeder: moves due jobs from PostgreSQL onto the Redis streams.

Woken by NOTIFY (enqueue commits) and by a timer (scheduled ``send_at`` and retry times). Pushes
happen inside the transaction that marks jobs as pushed: a crash before commit leaves them
unpushed; a crash after XADD but before commit only duplicates stream entries, which the claim
step ignores. It stops pushing while the streams hold ``stream_high_water`` entries, so Redis
memory stays small with a million jobs queued and the reconciler can tell lost entries apart.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from engine.config import QueueConfig
from engine.periodic import Periodic, run_until
from engine.queue.streams import Streams
from engine.store import jobs as job_store
from engine.store.notify import NOTIFY_CHANNEL

log = logging.getLogger("engine.feeder")


async def feed_once(
    pool: asyncpg.Pool,
    streams: Streams,
    cfg: QueueConfig,
    cursor: job_store.FeedCursor | None = None,
) -> int:
    """Push one batch of due jobs; returns how many were pushed. ``cursor`` carries the tenant
    rotation from one round to the next (see :func:`engine.store.jobs.take_due`)."""
    if cursor is not None:
        cursor.more = False  # stays so unless this round's take_due says otherwise
    depth = sum((await streams.depth()).values())
    room = cfg.stream_high_water - depth
    if room <= 0:
        return 0
    total_w = sum(cfg.weights)
    budget = min(room, cfg.feeder_batch)
    limits = [max(1, budget * w // total_w) for w in cfg.weights]
    async with pool.acquire() as conn, conn.transaction():
        rows = await job_store.take_due(conn, limits, cursor)
        await streams.push([(r["id"], r["tenant_id"], r["priority"]) for r in rows])
    return len(rows)


class Feeder:
    """Runs :func:`feed_once` whenever work may have become due."""

    def __init__(self, pool: asyncpg.Pool, streams: Streams, cfg: QueueConfig, dsn: str) -> None:
        self.pool = pool
        self.streams = streams
        self.cfg = cfg
        self.dsn = dsn
        self.wake = asyncio.Event()
        self._listen: asyncpg.Connection | None = None
        self.cursor = job_store.FeedCursor(len(cfg.weights))

    def _on_notify(self, *_: object) -> None:
        self.wake.set()

    async def _ensure_listener(self) -> None:
        if self._listen is not None and not self._listen.is_closed():
            return
        try:
            self._listen = await asyncpg.connect(self.dsn, timeout=10.0)
            await self._listen.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:  # any failure (asyncpg.InternalClientError on a restart too):
            self._listen = None  # this runs outside run()'s catch; the feeder must not die
            log.warning("cannot LISTEN for new jobs; polling", extra={"error": str(exc)})

    async def feed(self) -> float | None:
        """One round; returns the wait before the next one (None: the interval)."""
        await self._ensure_listener()
        pushed = await feed_once(self.pool, self.streams, self.cfg, self.cursor)
        if pushed >= self.cfg.feeder_batch // 2 or self.cursor.more:
            return 0.0  # more is probably due right now, or tenants not yet visited
        return None if pushed == 0 else 0.05

    def task(self) -> Periodic:
        """Woken by NOTIFY, else every ``feeder_interval_s``; an outage is retried every second
        (backing off to the interval when that is longer): outages must not kill the feeder."""
        interval = self.cfg.feeder_interval_s
        return Periodic(
            "feeder", self.feed, interval, wake=self.wake, retry_s=1.0, max_backoff_s=interval
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Feed until ``stop`` is set; survives PostgreSQL/Redis outages by retrying."""
        try:
            await run_until(self.task(), stop)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._listen is not None and not self._listen.is_closed():
            await self._listen.close()
        self._listen = None
