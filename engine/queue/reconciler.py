"""The reconciler: repairs what Redis or a dead process lost, so no job is ever stranded.

Each round: (1) if Redis lost its data (epoch key gone) every pushed job is pushed again;
(2) jobs pushed long ago and still waiting are pushed again; (3) consumers whose heartbeat
expired are forgotten, their jobs released and the entries they read made pushable again;
(4) expired leases are released; (5) jobs past their maximum age fail. Duplicate stream
entries are harmless: a job is claimed once in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import asyncpg

from engine import metrics
from engine.config import QueueConfig
from engine.periodic import Periodic
from engine.queue import identity
from engine.queue.streams import Streams
from engine.store import feeding
from engine.store import jobs as job_store

log = logging.getLogger("engine.reconciler")


def stale_push_every_s(cfg: QueueConfig) -> float:
    """How often a round looks for stale pushes: every round, but at most twice per
    ``reconcile_after_s``. No index names the push mark (migration 150), so the search reads
    every job due for longer than that: ~1 s of PostgreSQL with a million such jobs waiting,
    which every 15 s would be 6% of a core. A lost push is repaired within 1.5x
    ``reconcile_after_s`` instead of that plus one round."""
    return max(cfg.reconcile_interval_s, cfg.reconcile_after_s / 2)


async def reconcile_once(
    pool: asyncpg.Pool,
    streams: Streams,
    cfg: QueueConfig,
    consumer: str,
    *,
    stale_push: bool = True,
) -> dict[str, int]:
    """One repair round; returns the number of jobs touched per kind of repair.
    ``stale_push``: whether this round looks for stale pushes (see :func:`stale_push_every_s`)."""
    repairs: dict[str, int] = {}
    if await streams.check_epoch():
        repairs["redis_lost"] = await feeding.reset_pushed(pool)
    if stale_push:
        repairs["stale_push"] = await feeding.repush_stale(pool, cfg.reconcile_after_s)
    dead = await streams.dead_consumers(consumer)
    for name in dead:
        # Its claims and the entries it read but never claimed: a forgotten entry would leave
        # its job marked pushed until the stale-push repair.
        taken = await identity.take_over(pool, streams, name, consumer)
        repairs["dead_consumer"] = repairs.get("dead_consumer", 0) + taken["released"]
        repairs["dead_unread"] = repairs.get("dead_unread", 0) + taken["unpushed"]
    repairs["lease_expired"] = await job_store.release_leases(pool)
    repairs["expired"] = await job_store.expire_old(pool)
    for kind, n in repairs.items():
        if n:
            metrics.RECONCILER_REPAIRS.labels(kind).inc(n)
    if any(repairs.values()):
        log.info("reconciler repaired jobs", extra={"repairs": repairs, "dead": dead})
    return repairs


def task(
    pool: asyncpg.Pool,
    streams: Streams,
    cfg: QueueConfig,
    consumer: str,
    wake: asyncio.Event | None = None,
) -> Periodic:
    """Heartbeat and reconcile every ``reconcile_interval_s`` (or when woken), from start-up;
    stale pushes every :func:`stale_push_every_s`."""
    last_stale = -math.inf

    async def round_() -> None:
        nonlocal last_stale
        await streams.heartbeat(consumer, max(5.0, cfg.reconcile_interval_s * 3))
        now = time.monotonic()
        stale = now - last_stale >= stale_push_every_s(cfg)
        await reconcile_once(pool, streams, cfg, consumer, stale_push=stale)
        if stale:
            last_stale = now

    # Outages must not kill the reconciler: a failed round is retried every second (backing off
    # to 2 s), so a Redis that comes back empty is refilled as soon as it answers.
    return Periodic(
        "reconciler",
        round_,
        cfg.reconcile_interval_s,
        wake=wake,
        retry_s=min(1.0, cfg.reconcile_interval_s),
        max_backoff_s=min(2.0, cfg.reconcile_interval_s),
    )
