"""``python -m bench fairness``: waiting behind someone else's campaign (issue 20).

The real daemon (RSA-2048 DKIM, shaping on, PostgreSQL with fsync, DATA to ``engine.sink``) sends
tenant A's campaign; once a tenth of it has gone, tenant B enqueues 50 jobs and A one
high-priority message. Reported from PostgreSQL's own timestamps (enqueue -> relayed):
``tenant_b_s`` (B's last job), ``high_priority_s``, ``campaign_relayed_meanwhile`` (A's messages
relayed while B waited) and the campaign's ``engine_msg_s``; ``--backlog-s`` sets
``[queue] stream_backlog_s`` (0: the time cap off, to compare in the same session).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.e2e import DOMAIN, Engine, Sink, _wait_done, job_docs
from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.store import pool as pool_mod

B_TENANT = "bench-b"
LIMITS: dict[str, Any] = {"max_message_bytes": 10**7, "max_age_s": 86400.0}


def _extra_jobs() -> list[bytes]:
    docs = [
        {
            "tenant_id": B_TENANT,
            "idempotency_key": f"b-{i}",
            "from": f"news@{DOMAIN}",
            "to": f"b{i}@example.com",
            "subject": "B's transactional mail",
            "text": "hello",
        }
        for i in range(50)
    ]
    docs.append(
        {
            "tenant_id": "bench",
            "idempotency_key": "vip",
            "from": f"news@{DOMAIN}",
            "to": "vip@example.com",
            "subject": "urgent",
            "text": "now",
            "priority": "high",
        }
    )
    return [orjson.dumps(d) for d in docs]


async def _relayed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM queue.jobs WHERE state = 'relayed'"))


async def _measure(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM queue.jobs"
        "   WHERE tenant_id = $1) b_s,"
        " (SELECT max(finished_at) FROM queue.jobs WHERE tenant_id = $1) b_done,"
        " (SELECT min(created_at) FROM queue.jobs WHERE tenant_id = $1) b_at,"
        " (SELECT extract(epoch FROM finished_at - created_at) FROM queue.jobs"
        "   WHERE idempotency_key = 'vip') high_s",
        B_TENANT,
    )
    assert row is not None
    meanwhile = await conn.fetchval(
        "SELECT count(*) FROM queue.jobs WHERE tenant_id = 'bench' AND idempotency_key <> 'vip'"
        " AND finished_at > $1 AND finished_at <= $2",
        row["b_at"],
        row["b_done"],
    )
    span = await conn.fetchval(
        "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM queue.jobs"
        " WHERE tenant_id = 'bench'"
    )
    return {
        "tenant_b_s": round(float(row["b_s"]), 2),
        "high_priority_s": round(float(row["high_s"]), 2),
        "campaign_relayed_meanwhile": int(meanwhile),
        "campaign_span_s": round(float(span), 1),
    }


def run(argv: list[str]) -> dict[str, Any]:
    """The fairness benchmark."""
    ap = argparse.ArgumentParser(prog="python -m bench fairness")
    ap.add_argument("--campaign", type=int, default=5000, help="tenant A's jobs")
    ap.add_argument("--backlog-s", type=float, default=None, help="[queue] stream_backlog_s")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    n = args.campaign

    async def go() -> dict[str, Any]:
        sink = Sink(tmp, "fairness-sink", chunking=False)
        # The shipped in-flight window (e2e's is larger): jobs in flight are ahead of B too.
        queue: dict[str, Any] = {"max_in_flight": 512, "batch_size": 256}
        if args.backlog_s is not None:
            queue["stream_backlog_s"] = args.backlog_s
        engine = Engine(tmp, sink.port, shaping=True, dkim=True, overrides={"queue": queue})
        try:
            await engine.prepare()
            await engine.start()
            pool = await pool_mod.connect(DatabaseConfig(dsn=engine.pg.dsn, pool_min=1, pool_max=2))
            conn = await asyncpg.connect(engine.pg.dsn)
            try:
                await conn.execute("INSERT INTO oltp.tenants (tenant_id) VALUES ($1)", B_TENANT)
                res = await enqueue(pool, job_docs(n, "fair"), **LIMITS)
                assert all(r.error is None for r in res)
                deadline = time.monotonic() + max(300.0, n / 10)
                while await _relayed(conn) < n // 10:
                    assert time.monotonic() < deadline, "the campaign does not flow"
                    await asyncio.sleep(0.05)
                res = await enqueue(pool, _extra_jobs(), **LIMITS)
                assert all(r.error is None for r in res)
                await _wait_done(conn, n + 51, timeout=max(300.0, n / 10))
                figures = await _measure(conn)
            finally:
                await conn.close()
                await pool.close()
            engine.stop()
        finally:
            engine.cleanup()
            stats = sink.stop()
        return {
            **figures,
            "engine_msg_s": round(n / figures["campaign_span_s"], 1),
            "lost": n + 51 - stats["unique_message_ids"],
            "duplicates": stats["duplicates"],
            "campaign": n,
            "stream_backlog_s": "default" if args.backlog_s is None else args.backlog_s,
        }

    return uvloop.run(go())
