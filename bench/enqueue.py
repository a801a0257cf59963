"""``python -m bench enqueue``: jobs/s through the Python batch path and the SQL function.

Both paths write the same jobs (same body, distinct recipients) into a throwaway PostgreSQL with
fsync on, in the same run. The SQL path is what a Node service does inside its own transaction:
``SELECT * FROM engine.enqueue($1::jsonb)`` with a batch of jobs per call.

Round trips are counted, not assumed: the throwaway server loads ``pg_stat_statements`` (with
utility statements, so BEGIN and COMMIT count) and the bench reads how many statements each
path executed, per 5,000 jobs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import asyncpg
import orjson
import uvloop

from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.servers import ThrowawayPostgres
from engine.store import pool as pool_mod
from engine.store import tenants
from engine.store.migrate import migrate
from engine.tenancy import domains as sending_domains


def _docs(n: int, run: str) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "tenant_id": "bench",
                "idempotency_key": f"{run}-{i}",
                "from": "news@bench.example",
                "to": f"user{i}@example.com",
                "subject": "Monthly update",
                "text": "Hello there. " * 200,
            }
        )
        for i in range(n)
    ]


async def _statements(dsn: str) -> int:
    """Statements executed so far, the bench's own readings excluded (a fresh connection, so
    nothing of the pool's counts twice)."""
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements"
            " WHERE query NOT LIKE '%pg_stat_statements%'"
        )
        await conn.execute("SELECT pg_stat_statements_reset()")
        return n
    finally:
        await conn.close()


def run(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench enqueue")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--sql-batch", type=int, default=1000)
    args = ap.parse_args(argv)

    async def go() -> dict[str, Any]:
        settings = {
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track_utility": "on",
        }
        with ThrowawayPostgres(fsync=True, settings=settings) as pg:
            conn = await asyncpg.connect(pg.dsn)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.close()
            await migrate(pg.dsn)
            pool = await pool_mod.connect(DatabaseConfig(dsn=pg.dsn, pool_min=1, pool_max=4))
            try:
                await tenants.add(pool, "bench")
                # Sending domains belong to tenants: the checks run as they do in production.
                await sending_domains.add(pool, "bench", "bench.example", verified=True)
                docs = _docs(args.jobs, "py")
                await _statements(pg.dsn)
                t0 = time.perf_counter()
                res = await enqueue(pool, docs, max_message_bytes=10**7, max_age_s=86400)
                py_s = time.perf_counter() - t0
                py_trips = await _statements(pg.dsn)
                assert all(r.error is None for r in res)
                sql_docs = [orjson.loads(d) for d in _docs(args.jobs, "sql")]
                t0 = time.perf_counter()
                for i in range(0, len(sql_docs), args.sql_batch):
                    rows = await pool.fetch(
                        "SELECT * FROM engine.enqueue($1::jsonb)", sql_docs[i : i + args.sql_batch]
                    )
                    assert all(r["error"] is None for r in rows)
                sql_s = time.perf_counter() - t0
                sql_trips = await _statements(pg.dsn)
                bodies = await pool.fetchval("SELECT count(*) FROM content.email_content")
            finally:
                await pool.close()
        return {
            "jobs_s": round(args.jobs / py_s, 1),
            "sql_jobs_s": round(args.jobs / sql_s, 1),
            "jobs": args.jobs,
            "bodies_stored": bodies,
            "round_trips_per_5000_jobs": round(py_trips * 5000 / args.jobs, 1),
            "sql_round_trips_per_5000_jobs": round(sql_trips * 5000 / args.jobs, 1),
        }

    return uvloop.run(go())
