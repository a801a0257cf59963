"""The feeder: moves due jobs from PostgreSQL onto the Redis streams.

Woken by NOTIFY (enqueue commits) and by a timer (scheduled ``send_at`` and retry times). Pushes
happen inside the transaction that marks jobs as pushed: a crash before commit leaves them
unpushed; a crash after XADD but before commit only duplicates stream entries, which the claim
step ignores. It stops pushing while the streams hold ``stream_high_water`` entries, so Redis
memory stays small with a million jobs queued and the reconciler can tell lost entries apart.

Below that, :class:`Pace` caps the backlog in time: each priority's streams hold at most
``stream_backlog_s`` seconds of unread work at the send rate measured across every engine, so a
job pushed now (another tenant's turn, a high-priority message) waits behind about that much,
not behind everything a campaign already pushed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from engine.config import QueueConfig
from engine.periodic import Periodic, run_until
from engine.queue.pace import Pace
from engine.queue.streams import Streams
from engine.store import feeding
from engine.store.notify import NOTIFY_CHANNEL

log = logging.getLogger("engine.feeder")


async def feed_once(
    pool: asyncpg.Pool,
    streams: Streams,
    cfg: QueueConfig,
    cursor: feeding.FeedCursor | None = None,
    pace: Pace | None = None,
) -> int:
    """Push one batch of due jobs; returns how many were pushed. ``cursor`` carries the tenant
    rotation from one round to the next (see :func:`engine.store.feeding.take_due`); ``pace``
    caps each priority's unread backlog in time (none: only ``stream_high_water`` applies)."""
    if cursor is not None:
        cursor.more = False  # stays so unless this round's take_due says otherwise
    allowance = None if pace is None else pace.allowance()
    if allowance is None:
        depth = sum((await streams.depth()).values())
        unread = [0] * len(cfg.weights)
    else:
        assert pace is not None
        unread, depth, pushed = await streams.backlog()
        pace.observe(time.monotonic(), depth, pushed)
        allowance = pace.allowance()
    room = cfg.stream_high_water - depth
    if room <= 0:
        return 0
    total_w = sum(cfg.weights)
    budget = min(room, cfg.feeder_batch)
    limits = [max(1, budget * w // total_w) for w in cfg.weights]
    wanted = limits
    if allowance is not None:
        limits = [max(0, min(lim, allowance - u)) for lim, u in zip(limits, unread, strict=True)]
        if not any(limits):
            assert pace is not None
            pace.capped = True
            return 0
    async with pool.acquire() as conn, conn.transaction():
        rows = await feeding.take_due(conn, limits, cursor)
        await streams.push([(r["id"], r["tenant_id"], r["priority"]) for r in rows])
    if pace is not None:
        # Capped only where the cap bit: a priority held below its share that filled it.
        got = [0] * len(limits)
        for r in rows:
            got[min(int(r["priority"]), len(got) - 1)] += 1
        pace.capped = any(
            lim < w and n >= lim for lim, w, n in zip(limits, wanted, got, strict=True)
        )
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
        self.cursor = feeding.FeedCursor(len(cfg.weights))
        self.pace = Pace(cfg)

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
        pushed = await feed_once(self.pool, self.streams, self.cfg, self.cursor, self.pace)
        if pushed >= self.cfg.feeder_batch // 2 or self.cursor.more:
            return 0.0  # more is probably due right now, or tenants not yet visited
        if self.pace.capped:
            return self.pace.retry_s  # more may be due: top the backlog up as it drains
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
