"""``python -m bench memory``: daemon RSS with a million jobs queued (PostgreSQL + Redis).

Enqueues ``--jobs`` (default 1,000,000) through the batch path into a throwaway PostgreSQL, starts
the daemon against a local sink and samples its RSS once a second for ``--seconds`` while it
works through the queue. Redis holds at most ``stream_high_water`` entries whatever the backlog,
and the daemon holds only work in flight, so RSS should not grow with the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench.e2e import Engine, Sink, job_docs, tree_mb
from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.store import pool as pool_mod


def run(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench memory")
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))

    async def go() -> dict[str, Any]:
        sink = Sink(tmp, "mem-sink")
        engine = Engine(tmp, sink.port, shaping=True, dkim=True)
        try:
            await engine.prepare()
            pool = await pool_mod.connect(DatabaseConfig(dsn=engine.pg.dsn, pool_min=1, pool_max=4))
            t0 = time.perf_counter()
            for start in range(0, args.jobs, 50_000):
                docs = job_docs(min(50_000, args.jobs - start), f"m{start}")
                await enqueue(pool, docs, max_message_bytes=10**7, max_age_s=86400)
            enqueue_s = time.perf_counter() - t0
            await pool.close()
            await engine.start()
            assert engine.proc is not None
            samples = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                samples.append(tree_mb(engine.proc.pid, "VmRSS"))
                await asyncio.sleep(1.0)
            conn = await asyncpg.connect(engine.pg.dsn)
            relayed = await conn.fetchval("SELECT count(*) FROM queue.jobs WHERE state='relayed'")
            await conn.close()
            engine.stop()
        finally:
            engine.cleanup()
            sink.stop()
        return {
            "rss_mb": round(max(samples), 1),
            "rss_first_mb": round(samples[0], 1),
            "rss_last_mb": round(samples[-1], 1),
            "queued_jobs": args.jobs,
            "relayed_during_sample": relayed,
            "enqueue_jobs_s": round(args.jobs / enqueue_s, 1),
            "seconds": args.seconds,
        }

    return uvloop.run(go())
