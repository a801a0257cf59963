"""The reconciler: repairs what Redis or a dead process lost, so no job is ever stranded.

Each round: (1) if Redis lost its data (epoch key gone) every pushed job is pushed again;
(2) jobs pushed long ago and still waiting are pushed again; (3) consumers whose heartbeat
expired are forgotten and their jobs released; (4) expired leases are released; (5) jobs past
their maximum age fail. Duplicate stream entries are harmless: a job is claimed once in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from engine import metrics
from engine.config import QueueConfig
from engine.periodic import Periodic
from engine.queue.streams import Streams
from engine.store import jobs as job_store

log = logging.getLogger("engine.reconciler")


async def reconcile_once(
    pool: asyncpg.Pool, streams: Streams, cfg: QueueConfig, consumer: str
) -> dict[str, int]:
    """One repair round; returns the number of jobs touched per kind of repair."""
    repairs: dict[str, int] = {}
    if await streams.check_epoch():
        repairs["redis_lost"] = await job_store.reset_pushed(pool)
    repairs["stale_push"] = await job_store.repush_stale(pool, cfg.reconcile_after_s)
    dead = await streams.dead_consumers(consumer)
    if dead:
        repairs["dead_consumer"] = await job_store.release_leases(pool, dead)
        for name in dead:
            await streams.forget_consumer(name)
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
    """Heartbeat and reconcile every ``reconcile_interval_s`` (or when woken), from start-up."""

    async def round_() -> None:
        await streams.heartbeat(consumer, max(5.0, cfg.reconcile_interval_s * 3))
        await reconcile_once(pool, streams, cfg, consumer)

    # Outages must not kill the reconciler: a failed round is retried after the interval.
    return Periodic("reconciler", round_, cfg.reconcile_interval_s, wake=wake)
