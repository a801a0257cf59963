"""``python -m bench enqueue``: jobs/s through the Python batch path and the SQL function.

Both paths write the same jobs (same body, distinct recipients) into a throwaway PostgreSQL with
fsync on, in the same run. The SQL path is what a Node service does inside its own transaction:
``SELECT * FROM engine.enqueue($1::jsonb)`` with a batch of jobs per call.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

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


def run(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench enqueue")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--sql-batch", type=int, default=1000)
    args = ap.parse_args(argv)

    async def go() -> dict[str, Any]:
        with ThrowawayPostgres(fsync=True) as pg:
            await migrate(pg.dsn)
            pool = await pool_mod.connect(DatabaseConfig(dsn=pg.dsn, pool_min=1, pool_max=4))
            try:
                await tenants.add(pool, "bench")
                # Sending domains belong to tenants: the checks run as they do in production.
                await sending_domains.add(pool, "bench", "bench.example", verified=True)
                docs = _docs(args.jobs, "py")
                t0 = time.perf_counter()
                res = await enqueue(pool, docs, max_message_bytes=10**7, max_age_s=86400)
                py_s = time.perf_counter() - t0
                assert all(r.error is None for r in res)
                sql_docs = [orjson.loads(d) for d in _docs(args.jobs, "sql")]
                t0 = time.perf_counter()
                for i in range(0, len(sql_docs), args.sql_batch):
                    rows = await pool.fetch(
                        "SELECT * FROM engine.enqueue($1::jsonb)", sql_docs[i : i + args.sql_batch]
                    )
                    assert all(r["error"] is None for r in rows)
                sql_s = time.perf_counter() - t0
                bodies = await pool.fetchval("SELECT count(*) FROM content.email_content")
            finally:
                await pool.close()
        return {
            "jobs_s": round(args.jobs / py_s, 1),
            "sql_jobs_s": round(args.jobs / sql_s, 1),
            "jobs": args.jobs,
            "bodies_stored": bodies,
            "round_trips_per_5000_jobs": "6 (validate in Python, unnest inserts)",
        }

    return uvloop.run(go())
