"""Parsing off the event loop under a CPU budget, over real SMTP to the real listener.

A message whose parse uses up ``[inbound] parse_cpu_budget_ms`` is quarantined (stored, marked,
no effect) and stays so across restarts until ``engine bounce requeue ID`` (the real CLI); a parse
worker killed mid-parse does not lose its message; the listener's shutdown ends its workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import orjson
import pytest

from engine.daemon import Daemon
from engine.enqueue import enqueue
from engine.looplag import cpu_wait_s
from engine.store import inbound as inbound_store
from engine.store import tenants
from tests.conftest import TEST_VERP_SECRET, make_config
from tests.fakes.mailu import FakeMailU
from tests.integration.test_cli import engine
from tests.integration.test_inbound import dsn
from tests.security.listener import FBL, listener_config, running_listener, verp_address


async def _job(pool: asyncpg.Pool, to: str) -> tuple[int, str]:
    """A queued job of tenant acme to ``to``: its id and Message-ID."""
    if not await pool.fetchval("SELECT 1 FROM oltp.tenants WHERE tenant_id = 'acme'"):
        await tenants.add(pool, "acme")
    doc = {"tenant_id": "acme", "idempotency_key": to, "from": "news@acme.example", "to": to}
    await enqueue(pool, [orjson.dumps(doc | {"text": "hi"})], max_message_bytes=10**6, max_age_s=60)
    row = await pool.fetchrow("SELECT id, message_id FROM queue.jobs WHERE recipient = $1", to)
    return int(row["id"]), str(row["message_id"])


def _big_dsn(rcpt: str, message_id: str, mib: int = 3) -> bytes:
    """A real DSN that ends with a text part of ``mib`` MiB of ordinary lines (~15 ms to parse)."""
    lines = mib * 1024 * 1024 // 56
    filler = b"".join(
        b"line %07d of a very long explanation, nothing hostile\r\n" % i for i in range(lines)
    )
    part = b"--B\r\nContent-Type: text/plain\r\n\r\n" + filler
    return dsn(rcpt, message_id).replace(b"--B--\r\n", part + b"--B--\r\n")


async def _send(port: int, rcpt: str, message: bytes) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await smtp.connect()
    try:
        await smtp.sendmail("", [rcpt], message)
    finally:
        await smtp.quit()


async def _until(pool: asyncpg.Pool, sql: str, *args: object, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await pool.fetchval(sql, *args)
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s: {sql} {args}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_over_budget_is_quarantined_until_requeued(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    job_id, mid = await _job(pool, "gone@example.com")
    tiny = listener_config(clean_db, redis_prefix, parse_cpu_budget_ms=1, sweep_interval_s=0.2)
    async with running_listener(tiny, pool) as service:
        await _send(service.port or 0, verp_address(job_id), _big_dsn("gone@example.com", mid))
        inbound_id = await _until(
            pool, "SELECT id FROM content.inbound_messages WHERE quarantined_at IS NOT NULL"
        )
    row = await pool.fetchrow("SELECT * FROM content.inbound_messages WHERE id = $1", inbound_id)
    assert row["processed_at"] is None and "CPU budget exceeded" in row["quarantine_reason"]
    assert row["parse_cpu_ms"] >= 1
    # no effect: not suppressed, job untouched, no event
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 0
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "queued"
    assert await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind <> 'queued'") == 0

    # A restart (even with a budget that would now let it through) does not parse it again.
    roomy = listener_config(
        clean_db, redis_prefix, parse_cpu_budget_ms=60_000, sweep_interval_s=0.2
    )
    async with running_listener(roomy, pool) as service:
        await asyncio.sleep(1.0)  # several sweeps
        assert service.intake.depth == 0
        assert await pool.fetchval(
            "SELECT quarantined_at = $2 FROM content.inbound_messages WHERE id = $1",
            inbound_id,
            row["quarantined_at"],
        )
        # The operator requeues it with the real CLI; the running listener parses it again.
        listing = await asyncio.to_thread(engine, roomy, "bounce", "quarantined")
        assert listing.returncode == 0 and f"{inbound_id} " in listing.stdout.decode()
        out = await asyncio.to_thread(engine, roomy, "bounce", "requeue", str(inbound_id), "999999")
        assert out.returncode == 1, out.stderr  # 999999 does not exist
        text = out.stdout.decode()
        assert f"{inbound_id}: requeued" in text and "999999: no such inbound message" in text
        await _until(
            pool,
            "SELECT processed_at IS NOT NULL FROM content.inbound_messages WHERE id = $1",
            inbound_id,
        )
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "bounced"
    assert await pool.fetchval("SELECT reason FROM oltp.suppressions") == "userunknown"
    assert (
        await pool.fetchval("SELECT count(*) FROM oltp.audit_log WHERE action = 'inbound.requeue'")
        == 1
    )
    again = await asyncio.to_thread(engine, roomy, "bounce", "requeue", str(inbound_id))
    assert again.returncode == 0 and "already processed" in again.stdout.decode()


async def test_worker_killed_mid_parse_loses_nothing(
    clean_db: str,
    redis_prefix: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flag = tmp_path / "spinning.pid"
    monkeypatch.setenv("ENGINE_TEST_SPIN_FILE", str(flag))
    job_id, mid = await _job(pool, "gone@example.com")
    cfg = listener_config(clean_db, redis_prefix, parse_cpu_budget_ms=60_000)
    message = dsn("gone@example.com", mid).replace(b"Subject:", b"X-Test-Spin: 1\r\nSubject:")
    async with running_listener(
        cfg, pool, worker_module="tests.fakes.spinning_parse_worker"
    ) as service:
        assert service.workers is not None
        first = service.workers.pids()
        await _send(service.port or 0, verp_address(job_id), message)
        deadline = time.monotonic() + 20
        while not flag.exists() or not flag.read_text():
            assert time.monotonic() < deadline, "the worker never started parsing"
            await asyncio.sleep(0.01)
        spinning = int(flag.read_text())
        assert spinning in first
        os.kill(spinning, signal.SIGKILL)  # mid-parse: it spins until killed
        await _until(pool, "SELECT state = 'bounced' FROM queue.jobs WHERE id = $1", job_id)
        assert spinning not in service.workers.pids() and service.workers.pids()
        pids = service.workers.pids()
    row = await pool.fetchrow("SELECT * FROM content.inbound_messages")
    assert row["processed_at"] is not None and row["quarantined_at"] is None
    # the listener's shutdown ended its workers
    assert all(_gone(p) for p in pids)


async def test_worker_dying_twice_quarantines_with_the_reason(
    clean_db: str,
    redis_prefix: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same message kills a fresh worker too: quarantined as a crash, and no worker left
    behind; the listener goes on with the next message."""
    flag = tmp_path / "spinning.pid"
    monkeypatch.setenv("ENGINE_TEST_SPIN_FILE", str(flag))
    job_id, mid = await _job(pool, "gone@example.com")
    cfg = listener_config(clean_db, redis_prefix, parse_cpu_budget_ms=60_000)
    message = dsn("gone@example.com", mid).replace(b"Subject:", b"X-Test-Spin: 1\r\nSubject:")
    async with running_listener(
        cfg, pool, worker_module="tests.fakes.spinning_parse_worker"
    ) as service:
        await _send(service.port or 0, verp_address(job_id), message)
        for _ in range(2):
            deadline = time.monotonic() + 20
            while not flag.exists() or not flag.read_text():
                assert time.monotonic() < deadline, "no worker started parsing"
                await asyncio.sleep(0.01)
            pid = int(flag.read_text())
            flag.unlink()  # the next worker spins too
            os.kill(pid, signal.SIGKILL)
        reason = await _until(
            pool,
            "SELECT quarantine_reason FROM content.inbound_messages WHERE quarantined_at"
            " IS NOT NULL",
        )
        assert "died twice" in str(reason)
        # The next (ordinary) message is parsed by the replacement worker.
        other_id, other_mid = await _job(pool, "other@example.com")
        await _send(service.port or 0, verp_address(other_id), dsn("other@example.com", other_mid))
        await _until(pool, "SELECT state = 'bounced' FROM queue.jobs WHERE id = $1", other_id)
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "queued"


async def test_daemon_shutdown_ends_the_parse_workers(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, mailu: FakeMailU
) -> None:
    cfg = make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        shaping={"enabled": False},
        dkim={"enabled": False},
        inbound={"listen": "127.0.0.1:0", "verp_secret": TEST_VERP_SECRET, "parse_workers": 2},
    )
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + 30
    while daemon.inbound is None or daemon.inbound.workers is None:
        assert time.monotonic() < deadline and not task.done(), "the daemon did not start"
        await asyncio.sleep(0.05)
    pids = daemon.inbound.workers.pids()
    assert len(pids) == 2 and not any(_gone(p) for p in pids)
    daemon._on_stop(signal.SIGTERM)
    assert await asyncio.wait_for(task, 20) == 0
    assert all(_gone(p) for p in pids), "parse workers outlived the daemon"


async def test_a_message_whose_effects_always_fail_does_not_hold_up_the_others(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: applying one message's effects raises (as a bug in the effects layer
    would) while PostgreSQL is fine. It is quarantined; the message batched with it is applied."""
    from engine.inbound import listener as listener_mod

    poison_job, poison_mid = await _job(pool, "poison@example.com")
    good_job, good_mid = await _job(pool, "good@example.com")
    real_apply = listener_mod.apply

    async def failing_apply(
        pool_: asyncpg.Pool, items: list[Any], *args: Any, **kwargs: Any
    ) -> Any:
        if any(i.verp_job_id == poison_job for i in items):
            raise ValueError("effects bug")
        return await real_apply(pool_, items, *args, **kwargs)

    monkeypatch.setattr(listener_mod, "apply", failing_apply)
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, run=False) as service:
        service.apply_retry_s = 0.01
        await _send(
            service.port or 0, verp_address(poison_job), dsn("poison@example.com", poison_mid)
        )
        await _send(service.port or 0, verp_address(good_job), dsn("good@example.com", good_mid))
        stop = asyncio.Event()
        effects = asyncio.create_task(service.run(stop))
        try:
            await _until(pool, "SELECT state = 'bounced' FROM queue.jobs WHERE id = $1", good_job)
            reason = await _until(
                pool,
                "SELECT quarantine_reason FROM content.inbound_messages WHERE verp_job_id = $1"
                " AND quarantined_at IS NOT NULL",
                poison_job,
            )
            assert "effects bug" in str(reason)
        finally:
            stop.set()
            await asyncio.wait_for(effects, 10)
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", poison_job) == "queued"


async def test_start_up_recovery_reads_stored_rows_in_pages(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """Rows stored before a crash are queued a page at a time as the queue drains: the queue
    never holds more than queue_max, and every row is processed."""
    for i in range(23):
        await inbound_store.store_raw(
            pool,
            b"From: fbl@isp.example\r\nSubject: report %d\r\n\r\nhello\r\n" % i,
            peer="192.0.2.1",
            mail_from="fbl@isp.example",
            rcpt_to=[FBL],
            verp_job_id=None,
            fbl=True,
        )
    cfg = listener_config(clean_db, redis_prefix, queue_max=4, sweep_interval_s=0.2)
    deepest = 0
    async with running_listener(cfg, pool) as service:
        deadline = time.monotonic() + 30
        while await pool.fetchval(
            "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NULL"
        ):
            deepest = max(deepest, service.intake.depth)
            assert time.monotonic() < deadline, "not all stored rows were processed"
            await asyncio.sleep(0.005)
    assert 0 < deepest <= 4


async def test_a_runaway_parse_is_stopped_at_the_default_budget(
    clean_db: str,
    redis_prefix: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parse that would never end (the worker spins) is killed once it has used 250 ms of CPU,
    the message quarantined, and the event loop keeps its 10 ms ticks meanwhile."""
    monkeypatch.setenv("ENGINE_TEST_SPIN_FILE", str(tmp_path / "spinning.pid"))
    job_id, mid = await _job(pool, "gone@example.com")
    cfg = listener_config(clean_db, redis_prefix)  # parse_cpu_budget_ms: the default, 250
    assert cfg.inbound.parse_cpu_budget_ms == 250
    message = dsn("gone@example.com", mid).replace(b"Subject:", b"X-Test-Spin: 1\r\nSubject:")
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    async with running_listener(
        cfg, pool, worker_module="tests.fakes.spinning_parse_worker"
    ) as service:
        started = time.monotonic()
        await _send(service.port or 0, verp_address(job_id), message)
        while not await pool.fetchval(
            "SELECT count(*) FROM content.inbound_messages WHERE quarantined_at IS NOT NULL"
        ):
            assert time.monotonic() - started < 20, "never quarantined"
            due, waited = loop.time() + 0.01, cpu_wait_s()
            await asyncio.sleep(0.01)
            # Time spent waiting for a CPU on a busy box is not a stall of this loop.
            lags.append(loop.time() - due - (cpu_wait_s() - waited))
    row = await pool.fetchrow("SELECT * FROM content.inbound_messages")
    assert "CPU budget exceeded" in row["quarantine_reason"]
    assert 250 <= row["parse_cpu_ms"] < 400  # polled every 20 ms: stopped soon after 250
    assert max(lags) < 0.050, f"loop stalled {max(lags) * 1000:.0f} ms"
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "queued"
