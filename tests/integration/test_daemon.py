"""End to end through the real daemon: enqueue → PostgreSQL → Redis → relay pool → fake MailU."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from engine.config import Config
from engine.daemon import Daemon
from engine.enqueue import enqueue
from engine.store import jobs as job_store
from engine.store import tenants
from tests.conftest import make_config
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU


def job(i: int, to: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"k{i}",
            "from": "news@acme.example",
            "to": to or f"user{i}@example.com",
            "subject": "Hello é",
            "text": "Hi there",
            "html": "<p>Hi there</p>",
            "campaign_id": "c1",
        }
    )


def daemon_config(dsn: str, prefix: str, nodes: Sequence[FakeMailU], **queue: object) -> Config:
    return make_config(
        dsn,
        prefix,
        relay={
            "nodes": [
                {
                    "name": f"n{i}",
                    "host": "127.0.0.1",
                    "port": n.port,
                    "tls": "none",
                    "max_connections": 4,
                }
                for i, n in enumerate(nodes)
            ],
            "connect_timeout_s": 2.0,
            "command_timeout_s": 3.0,
        },
        queue={
            "retry_base_s": 0.2,
            "retry_max_s": 1.0,
            "feeder_interval_s": 0.1,
            "reconcile_interval_s": 1.0,
            "lease_s": 5.0,
            **queue,
        },
        shaping={"enabled": False},
        dkim={"enabled": False},
    )


async def run_until(
    cfg: Config, pool: asyncpg.Pool, done: dict[str, int], timeout: float = 30.0
) -> dict[str, int]:
    """Run a daemon until job counts reach ``done`` (each state at least that many)."""
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            counts = await job_store.counts(pool)
            if all(counts[s] >= n for s, n in done.items()):
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
    finally:
        daemon._on_stop(__import__("signal").SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0
    return counts


async def _enqueue(pool: asyncpg.Pool, items: list[bytes]) -> None:
    await tenants.add(pool, "acme")
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res), res


async def test_happy_path_each_job_relayed_once(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
) -> None:
    await _enqueue(pool, [job(i) for i in range(300)])
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    counts = await run_until(cfg, pool, {"relayed": 300})
    assert counts["relayed"] == 300
    assert mailu.count() == 300
    assert not mailu.duplicates()
    ids = {m for m in mailu.message_ids()}
    stored = {r["message_id"] for r in await pool.fetch("SELECT message_id FROM queue.jobs")}
    assert ids == stored
    msg = mailu.received[0]
    assert msg.mail_from.startswith("b-") and msg.mail_from.endswith("@bounces.localhost")
    assert b"Feedback-ID:" in msg.data
    stats = await pool.fetchrow("SELECT sum(sent) s, sum(relayed) r FROM olap.daily_stats")
    assert (stats["s"], stats["r"]) == (300, 300)


async def test_reply_classes(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
) -> None:
    mailu.fail_rcpt(r"^dead", 550, "5.1.1 user unknown")
    mailu.fail_rcpt(r"^busy", 450, "4.2.1 mailbox busy")
    await _enqueue(pool, [job(1, "dead@example.com"), job(2, "busy@example.com"), job(3)])
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    counts = await run_until(cfg, pool, {"failed": 1, "relayed": 1, "deferred": 1})
    rows = {r["recipient"]: r for r in await pool.fetch("SELECT * FROM queue.jobs")}
    assert rows["dead@example.com"]["state"] == "failed"
    assert rows["dead@example.com"]["last_code"] == 550
    assert rows["dead@example.com"]["last_status"] == "5.1.1"
    assert rows["busy@example.com"]["state"] == "deferred"
    assert rows["busy@example.com"]["last_code"] == 450
    assert counts["relayed"] == 1


async def test_node_down_fails_over(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
) -> None:
    with FakeMailU() as down:
        down.stop()
        await _enqueue(pool, [job(i) for i in range(50)])
        cfg = daemon_config(clean_db, redis_prefix, [down, mailu])
        counts = await run_until(cfg, pool, {"relayed": 50})
    assert counts["relayed"] == 50 and mailu.count() == 50


async def test_deferred_retried_until_relayed(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
) -> None:
    mailu.set_reply("DATA", 421, "4.7.0 try again later", times=5)
    await _enqueue(pool, [job(i) for i in range(5)])
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    counts = await run_until(cfg, pool, {"relayed": 5})
    assert counts["relayed"] == 5
    attempts = await pool.fetchval("SELECT sum(attempts) FROM queue.jobs")
    assert attempts == 10  # five 421s, then five successes


@pytest.mark.parametrize("state", ["cancelled"])
async def test_cancelled_job_not_sent(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
    state: str,
) -> None:
    await _enqueue(pool, [job(1), job(2)])
    jid = await pool.fetchval("SELECT id FROM queue.jobs WHERE idempotency_key = 'k1'")
    assert await job_store.cancel(pool, jid) == state
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    await run_until(cfg, pool, {"relayed": 1})
    await asyncio.sleep(0.3)
    assert mailu.count() == 1


@pytest.mark.parametrize("signer", ["process", "thread"])
async def test_dkim_signed_and_shaped_end_to_end(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
    tmp_path: object,
    signer: str,
) -> None:
    import dkim

    from engine.dkim.keys import generate_key

    pem, txt = generate_key("rsa-sha256", 2048)
    key = __import__("pathlib").Path(str(tmp_path)) / "k.pem"
    key.write_bytes(pem)
    key.chmod(0o600)
    await _enqueue(pool, [job(i) for i in range(40)])
    base = daemon_config(clean_db, redis_prefix, [mailu])
    cfg = make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1, "retry_base_s": 0.2},
        dkim={
            "enabled": True,
            "required": True,
            "keys": [{"domain": "acme.example", "selector": "s1", "private_key_file": str(key)}],
            "signer": signer,
        },
        shaping={
            "enabled": True,
            "warmup": False,
            "default_rate_per_s": 20.0,
            "burst_s": 1.0,
            "providers": [],
        },
        dns={"overrides": {"example.com": ["mx.example.com"]}},
    )
    assert base.queue.lease_s  # same shape as the other tests
    started = time.monotonic()
    counts = await run_until(cfg, pool, {"relayed": 40})
    elapsed = time.monotonic() - started
    assert counts["relayed"] == 40
    # 40 messages at 20/s with a 1 s burst cannot all go in under ~1 s
    assert elapsed > 1.0
    for m in mailu.received[:5]:
        assert dkim.verify(m.data, dnsfunc=lambda name, timeout=5: txt.encode())


async def test_missing_dkim_key_holds_mail_when_required(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    await _enqueue(pool, [job(1)])
    cfg = make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1},
        dkim={"enabled": True, "required": True},
        shaping={"enabled": False},
    )
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + 10
    reply = None
    while time.monotonic() < deadline:
        reply = await pool.fetchval("SELECT last_reply FROM queue.jobs")
        if reply:
            break
        await asyncio.sleep(0.1)
    daemon._on_stop(__import__("signal").SIGTERM)
    assert await asyncio.wait_for(task, 15) == 0
    assert reply and "no active DKIM key for acme.example" in reply
    assert mailu.count() == 0, "never sent unsigned"
    row = await pool.fetchrow("SELECT state, attempts FROM queue.jobs")
    assert row["state"] == "queued" and row["attempts"] == 0


async def test_every_state_change_is_an_event(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    mailu.fail_rcpt(r"^dead", 550, "5.1.1 user unknown")
    await _enqueue(pool, [job(1), job(2, "dead@example.com")])
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    await run_until(cfg, pool, {"relayed": 1, "failed": 1})
    rows = await pool.fetch(
        "SELECT kind, recipient, message_id, job_id FROM oltp.events WHERE kind <> 'queued'"
    )
    kinds = {(r["kind"], r["recipient"]) for r in rows}
    queued = await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind = 'queued'")
    assert queued == 2  # enqueue is a state change too
    assert ("relayed", "user1@example.com") in kinds
    assert ("failed", "dead@example.com") in kinds
    assert all(r["message_id"] and r["job_id"] for r in rows)


async def test_tenant_over_daily_quota_is_held(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    await _enqueue(pool, [job(i) for i in range(5)])
    await pool.execute("UPDATE oltp.tenants SET daily_quota = 3 WHERE tenant_id = 'acme'")
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    await run_until(cfg, pool, {"relayed": 3})
    await asyncio.sleep(0.5)
    counts = await job_store.counts(pool)
    # the quota is read every few seconds, so a batch already claimed may go over by its size
    assert 3 <= counts["relayed"] <= 5
    held = await pool.fetch("SELECT last_reply FROM queue.jobs WHERE state = 'queued'")
    assert all("daily quota" in (r["last_reply"] or "") for r in held)


async def test_small_tenant_not_stuck_behind_a_big_campaign(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    """Tenant A has 3,000 jobs queued; tenant B's 50 arrive later and finish within seconds."""
    await tenants.add(pool, "acme")
    await tenants.add(pool, "bravo")
    res = await enqueue(
        pool, [job(i) for i in range(3000)], max_message_bytes=10**6, max_age_s=3600
    )
    assert all(r.error is None for r in res)
    cfg = daemon_config(clean_db, redis_prefix, [mailu], stream_high_water=200)
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + 60
        while (await job_store.counts(pool, "acme"))["relayed"] < 300:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        b_jobs = [
            orjson.dumps(
                {
                    "tenant_id": "bravo",
                    "idempotency_key": f"b{i}",
                    "from": "alerts@bravo.example",
                    "to": f"b{i}@example.com",
                    "text": "your code is 123456",
                }
            )
            for i in range(50)
        ]
        await enqueue(pool, b_jobs, max_message_bytes=10**6, max_age_s=3600)
        started = time.monotonic()
        while (await job_store.counts(pool, "bravo"))["relayed"] < 50:
            assert time.monotonic() - started < 20, "tenant B waited behind tenant A"
            await asyncio.sleep(0.05)
        waited = time.monotonic() - started
        a_done = (await job_store.counts(pool, "acme"))["relayed"]
    finally:
        daemon._on_stop(__import__("signal").SIGTERM)
        assert await asyncio.wait_for(task, 30) == 0
    assert waited < 5.0
    assert a_done < 3000, "B finished before A's campaign did"
