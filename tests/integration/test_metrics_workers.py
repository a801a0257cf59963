"""Metrics that stay true at scale: two instances (``engine run --workers 2`` each) against one
PostgreSQL and Redis, jobs enqueued through SQL ``engine.enqueue(jsonb)`` in the test's own
transaction (a path that never touches /metrics). Scraping both instances' ``/metrics`` and
summing, as a dashboard does, gives exactly the jobs committed and the jobs relayed: every
worker's counters are served (multiprocess mode), and each committed job is counted by one
instance only. Process metrics come per worker, build info once per instance."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from engine import __version__
from engine.store import tenants
from engine.tenancy import domains
from tests.conftest import REDIS_URL, TEST_VERP_SECRET
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

JOBS = 400
Samples = list[tuple[str, dict[str, str], float]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, dsn: str, prefix: str, node: FakeMailU, admin_port: int) -> Path:
    path.write_text(
        f"""
[database]
dsn = "{dsn}"
pool_min = 1
pool_max = 3
[redis]
url = "{REDIS_URL}"
prefix = "{prefix}"
[queue]
feeder_interval_s = 0.1
[[relay.nodes]]
name = "n0"
host = "127.0.0.1"
port = {node.port}
tls = "none"
[shaping]
enabled = false
[dkim]
enabled = false
[inbound]
listen = "127.0.0.1:0"
verp_domain = "bounces.example.test"
verp_secret = "{TEST_VERP_SECRET}"
[admin]
listen = "127.0.0.1:{admin_port}"
"""
    )
    return path


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def _job(i: int) -> dict[str, str]:
    return {
        "tenant_id": "acme",
        "idempotency_key": f"k{i}",
        "from": "news@acme.example",
        "to": f"reader{i}@example.com",
        "subject": "hi",
        "text": "hello",
        "campaign_id": "c1",
    }


async def _enqueue_through_sql(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():  # the platform's own transaction
            for start in range(0, JOBS, 100):
                batch = [_job(i) for i in range(start, start + 100)]
                rows = await conn.fetch(
                    "SELECT * FROM engine.enqueue($1::jsonb)", orjson.dumps(batch).decode()
                )
                assert all(r["error"] is None for r in rows)
        # An idempotent replay inserts nothing and must count nothing.
        rows = await conn.fetch(
            "SELECT * FROM engine.enqueue($1::jsonb)", orjson.dumps(_job(0)).decode()
        )
        assert rows[0]["error"] is None
    finally:
        await conn.close()


def _start(conf: Path, log: IO[bytes], tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--workers", "2", "--config", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)},
    )


async def _scrape_until_counted(
    ports: list[int], procs: list[subprocess.Popen[bytes]]
) -> list[Samples]:
    """Scrape every instance until the summed counters reach JOBS (or 120 s pass)."""
    deadline = time.monotonic() + 120
    scrapes: list[Samples] = []
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "an instance exited"
        try:
            scrapes = [_scrape(port) for port in ports]
        except OSError:  # not listening yet
            await asyncio.sleep(0.5)
            continue
        relayed = sum(_sum(s, "engine_messages_total", outcome="relayed") for s in scrapes)
        enqueued = sum(_sum(s, "engine_jobs_enqueued_total") for s in scrapes)
        if relayed >= JOBS and enqueued >= JOBS:
            break
        await asyncio.sleep(0.5)
    return scrapes


def _check_instance(s: Samples) -> None:
    # Two workers per instance, each with its own process figures.
    pids = {lab["pid"] for n, lab, _ in s if n == "process_resident_memory_bytes"}
    assert len(pids) == 2, pids
    info = [lab for n, lab, _ in s if n == "engine_build_info"]
    assert info and {i["version"] for i in info} == {__version__}
    # A shared fact comes once per instance (one series per priority), not once per worker.
    depth = [lab["priority"] for n, lab, _ in s if n == "engine_queue_depth"]
    assert depth and len(depth) == len(set(depth))
    assert _sum(s, "engine_in_flight") >= 0


async def _relayed(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM queue.jobs WHERE state = 'relayed'"))
    finally:
        await conn.close()


async def test_two_instances_of_two_workers_sum_to_the_truth(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await tenants.add(pool, "acme")
    await domains.add(pool, "acme", "acme.example", verified=True)
    ports = [_free_port(), _free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i, port in enumerate(ports):
            conf = _config(tmp_path / f"engine{i}.toml", clean_db, redis_prefix, mailu, port)
            logs.append((tmp_path / f"engine{i}.log").open("wb"))
            procs.append(_start(conf, logs[-1], tmp_path))
        await _enqueue_through_sql(clean_db)
        scrapes = await _scrape_until_counted(ports, procs)
        assert await _relayed(clean_db) == JOBS
        relayed_by = [_sum(s, "engine_messages_total", outcome="relayed") for s in scrapes]
        assert sum(relayed_by) == JOBS, relayed_by
        assert sum(_sum(s, "engine_jobs_enqueued_total") for s in scrapes) == JOBS
        for s in scrapes:
            _check_instance(s)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(60) for p in procs] == [0, 0]
        leftovers = list(tmp_path.glob("engine-metrics-*"))
        assert not leftovers, leftovers  # each run's metrics directory is removed at exit
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for log in logs:
            log.close()
