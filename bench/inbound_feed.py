"""Hostile inbound mail fed over SMTP to a real daemon while it sends: does its loop stall?

The real daemon (``engine run``: throwaway PostgreSQL and Redis, RSA-2048 DKIM, a sink as the
relay node, the inbound listener on) sends a steady campaign while every message of the hostile
corpus (``tests/fuzz/hostile.py``) is delivered to its inbound listener over SMTP, to a valid VERP
address. The daemon's own 10 ms loop-lag ticker (``engine_event_loop_lag_seconds``: the worst lag
of each second) is scraped from its admin port four times a second, first while it only sends
(the baseline), then while the corpus is received, parsed and applied. The campaign is offered
at a steady rate well below capacity (default 300 msg/s): a saturated daemon has batch-sized
stalls of its own, and the question here is what inbound mail adds, and whether the send keeps
its rate.

Reported: ``loop_lag_max_ms`` (the worst second while hostile mail was received and processed),
``loop_lag_baseline_max_ms`` (the worst second while only sending), what became of the messages
(processed, quarantined) and the send rate during the feed against the baseline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import asyncpg
import msgspec

from bench.e2e import Engine, Sink, job_docs
from engine.compose import verp
from engine.config import DatabaseConfig, InboundConfig
from engine.enqueue import enqueue
from engine.servers import free_port
from engine.store import pool as pool_mod

VERP_DOMAIN = "bounces.bench.penguinmails.test"
FBL_ADDRESS = f"fbl@{VERP_DOMAIN}"
_LAG = re.compile(rb"^engine_event_loop_lag_seconds (\S+)$", re.MULTILINE)
#: Listener limits raised so the bench measures parsing, not the per-IP quotas (keys that this
#: version of the engine does not have are left out).
_GENEROUS = {
    "max_connections_per_ip": 100,
    "max_messages_per_minute_per_ip": 100_000,
    "max_messages_per_hour_per_ip": 1_000_000,
    "max_bytes_per_hour_per_ip": 1 << 40,
    "max_connections": 1000,
}


def _inbound_config(port: int, secret: str) -> dict[str, Any]:
    known = set(InboundConfig.__struct_fields__)
    cfg: dict[str, Any] = {
        "enabled": True,
        "listen": f"127.0.0.1:{port}",
        "verp_domain": VERP_DOMAIN,
        "verp_secret": secret,
        "fbl_addresses": [FBL_ADDRESS],
    }
    cfg.update({k: v for k, v in _GENEROUS.items() if k in known})
    return cfg


class LagScraper:
    """Reads the daemon's loop-lag gauge four times a second; remembers the worst per phase."""

    def __init__(self, admin_port: int) -> None:
        self.url = f"http://127.0.0.1:{admin_port}/metrics"
        self.phase = "baseline"
        self.worst: dict[str, float] = {}
        self.samples = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        found = _LAG.search(await r.read())
                    if found:
                        lag = float(found.group(1))
                        self.worst[self.phase] = max(self.worst.get(self.phase, 0.0), lag)
                        self.samples += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)


class Delivery(msgspec.Struct):
    """What the listener said to one message: accepted (after ``retries`` 4xx), or refused."""

    accepted: bool
    retries: int
    refusal: str | None = None


async def _send_one(port: int, rcpt: str, raw: bytes, deadline: float) -> Delivery:
    """Deliver one message, retrying 4xx answers (the listener asks to come back). A 5xx is a
    refusal the listener is entitled to (a line over the SMTP limit, say): nothing is stored."""
    refusals = 0
    while True:
        try:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120)
            async with client:
                await client.sendmail("", [rcpt], raw)
            return Delivery(True, refusals)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                return Delivery(False, refusals, f"{exc.code} {exc.message}"[:200])
            if time.monotonic() > deadline:
                raise
            refusals += 1
            await asyncio.sleep(0.2)
        except aiosmtplib.SMTPException:
            if time.monotonic() > deadline:
                raise
            refusals += 1
            await asyncio.sleep(0.2)


async def _inbound_state(conn: asyncpg.Connection) -> dict[str, int]:
    has_quarantine = await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'content'"
        " AND table_name = 'inbound_messages' AND column_name = 'quarantined_at'"
    )
    quarantined = "quarantined_at IS NOT NULL" if has_quarantine else "false"
    row = await conn.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE processed_at IS NOT NULL) AS processed,"
        f" count(*) FILTER (WHERE {quarantined}) AS quarantined FROM content.inbound_messages"
    )
    assert row is not None
    return {k: int(row[k]) for k in ("total", "processed", "quarantined")}


async def _relayed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM queue.jobs WHERE state = 'relayed'") or 0)


class Pacer:
    """Enqueues the campaign at a steady rate (``rate`` jobs/s in ticks of 100 ms)."""

    def __init__(self, pool: asyncpg.Pool, rate: float) -> None:
        self.pool = pool
        self.rate = rate
        self.first_job: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        per_tick = max(1, round(self.rate / 10))
        start, sent = time.perf_counter(), 0
        while not stop.is_set():
            res = await enqueue(
                self.pool,
                job_docs(per_tick, f"feed{sent}"),
                max_message_bytes=10**7,
                max_age_s=86400,
            )
            if self.first_job is None:
                self.first_job = min(r.job_id for r in res if r.job_id is not None)
            sent += per_tick
            with contextlib.suppress(TimeoutError):
                delay = start + sent / self.rate - time.perf_counter()
                await asyncio.wait_for(stop.wait(), max(0.0, delay))


async def feed(
    corpus: dict[str, bytes], tmp: Path, *, rate: float = 300.0, baseline_s: float = 5.0
) -> dict[str, Any]:
    """Run the daemon sending ``rate`` msg/s, feed ``corpus`` over SMTP; the figures."""
    secret = secrets.token_hex(32)
    inbound_port, admin_port = free_port(), free_port()
    sink = Sink(tmp, "feed-sink")
    engine = Engine(
        tmp,
        sink.port,
        shaping=False,
        dkim=True,
        overrides={
            "inbound": _inbound_config(inbound_port, secret),
            "admin": {"listen": f"127.0.0.1:{admin_port}"},
        },
    )
    stop = asyncio.Event()
    scraper = LagScraper(admin_port)
    try:
        await engine.prepare()
        await engine.start()
        pool = await pool_mod.connect(DatabaseConfig(dsn=engine.pg.dsn, pool_min=1, pool_max=3))
        conn = await asyncpg.connect(engine.pg.dsn)
        pacer = Pacer(pool, rate)
        tasks = [asyncio.create_task(scraper.run(stop)), asyncio.create_task(pacer.run(stop))]
        try:
            await asyncio.sleep(1.0)  # the first jobs reach the relay
            scraper.worst.clear()
            relayed0, t_base = await _relayed(conn), time.perf_counter()
            await asyncio.sleep(baseline_s)  # the baseline: sending only
            relayed1, t0 = await _relayed(conn), time.perf_counter()
            scraper.phase = "hostile"
            assert pacer.first_job is not None
            rcpt = verp.encode(pacer.first_job, domain=VERP_DOMAIN, secret=secret)
            deadline = time.monotonic() + 300
            deliveries = {
                name: await _send_one(inbound_port, rcpt, raw, deadline)
                for name, raw in corpus.items()
            }
            accepted = sum(d.accepted for d in deliveries.values())
            fed_s = time.perf_counter() - t0
            while True:
                state = await _inbound_state(conn)
                done = state["processed"] + state["quarantined"]
                if done >= accepted or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.2)  # the last window's gauge
            relayed2, t2 = await _relayed(conn), time.perf_counter()
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            await conn.close()
            await pool.close()
            engine.stop()
    finally:
        engine.cleanup()
        sink.stop()
    return {
        "loop_lag_max_ms": round(1000 * scraper.worst.get("hostile", 0.0), 1),
        "loop_lag_baseline_max_ms": round(1000 * scraper.worst.get("baseline", 0.0), 1),
        "hostile_smtp_messages": len(corpus),
        "hostile_smtp_bytes": sum(map(len, corpus.values())),
        "hostile_processed": state["processed"],
        "hostile_quarantined": state["quarantined"],
        "hostile_unfinished": accepted - state["processed"] - state["quarantined"],
        "hostile_refused_5xx": {n: d.refusal for n, d in deliveries.items() if not d.accepted},
        "hostile_retries_4xx": sum(d.retries for d in deliveries.values()),
        "hostile_feed_s": round(fed_s, 2),
        "send_offered_msg_s": rate,
        "send_msg_s_baseline": round((relayed1 - relayed0) / (t0 - t_base), 1),
        "send_msg_s_during_feed": round((relayed2 - relayed1) / (t2 - t0), 1),
        "lag_samples": scraper.samples,
    }
