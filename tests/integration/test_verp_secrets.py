"""VERP secrets end to end: the real CLI refuses guessable ones; a rotated-out secret still works
over real SMTP and the one-click route until its window ends, and no longer after."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import aiosmtplib
import asyncpg
import orjson
import pytest

from engine.compose import verp
from engine.config import Config
from engine.daemon import Daemon
from engine.enqueue import enqueue
from engine.store import tenants
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU
from tests.integration.test_inbound import dsn

ROOT = Path(__file__).resolve().parents[2]
NEW = "c6e1a94f2b7d3085e4f1a6c9b2d7e0f3"
OLD = "5a0e8d3c7f2b9146a3d8e5c0f7b2a9d4"
EXPIRED = "e2b7f4a9c1d6038b5e2a7f4c9d1b6e03"
DOMAIN = "bounces.acme.example"
NOWHERE = "postgresql://postgres@127.0.0.1:1/none"  # proves a refusal happens before connecting


def _engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_cli_refuses_the_shipped_example_secret() -> None:
    done = _engine("migrate", "--config", str(ROOT / "config" / "engine.toml"))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "[inbound] verp_secret is an example value" in done.stderr
    assert "openssl rand -hex 32" in done.stderr


def test_cli_takes_the_secret_from_the_environment(clean_db: str) -> None:
    env = {"ENGINE_INBOUND__VERP_SECRET": NEW, "ENGINE_DATABASE__DSN": clean_db}
    done = _engine("migrate", "--config", str(ROOT / "config" / "engine.toml"), env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_engine_run_refuses_to_start_without_a_secret(tmp_path: Path, workers: str) -> None:
    conf = tmp_path / "engine.toml"
    conf.write_text(f'[database]\ndsn = "{NOWHERE}"\n[inbound]\nenabled = false\n')
    done = _engine("run", "--workers", workers, "--config", str(conf))
    assert done.returncode == 2, done.stderr
    assert "[inbound] verp_secret is not set" in done.stderr.splitlines()[-1]
    # a short one, from a file, is refused at load
    secret = tmp_path / "verp.secret"
    secret.write_text("0f5e2c9a7b1d4e8f\n")
    secret.chmod(0o600)
    conf.write_text(f'[database]\ndsn = "{NOWHERE}"\n[inbound]\nverp_secret_file = "{secret}"\n')
    done = _engine("run", "--workers", workers, "--config", str(conf))
    assert done.returncode == 2 and "shorter than 32 bytes" in done.stderr, done.stderr


def _job(i: int) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"k{i}",
            "from": "news@acme.example",
            "to": f"reader{i}@example.com",
            "text": "hi",
            "campaign_id": "c1",
        }
    )


async def _wait(pool: asyncpg.Pool, sql: str, want: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = await pool.fetchval(sql)
        if got == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sql!r}: got {got!r}, want {want!r}")


@pytest.fixture
def rotated_cfg(clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path) -> Config:
    old_file = tmp_path / "verp.secret.old"
    old_file.write_text(OLD + "\n")
    old_file.chmod(0o600)
    now = datetime.now(UTC)
    return make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1},
        shaping={"enabled": False},
        dkim={"enabled": False},
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": DOMAIN,
            "verp_secret": NEW,
            "verp_previous": [
                {"secret_file": str(old_file), "until": (now + timedelta(days=1)).isoformat()},
                {"secret": EXPIRED, "until": (now - timedelta(seconds=1)).isoformat()},
            ],
            "unsubscribe_url": "https://unsub.acme.example/v1/unsubscribe",
        },
        admin={"listen": "127.0.0.1:0", "token": "t" * 32},
    )


def _token(job_id: int, secret: str) -> str:
    return verp.encode(job_id, domain=DOMAIN, secret=secret, local_prefix="u").rpartition("@")[0]


async def test_a_previous_secret_works_until_its_window_ends(
    pool: asyncpg.Pool, rotated_cfg: Config, mailu: FakeMailU
) -> None:
    await tenants.add(pool, "acme")
    await enqueue(pool, [_job(i) for i in (1, 2, 3)], max_message_bytes=10**6, max_age_s=3600)
    daemon = Daemon(rotated_cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 3)
        ids = {r["recipient"]: r for r in await pool.fetch("SELECT * FROM queue.jobs")}
        one, two, three = (ids[f"reader{i}@example.com"] for i in (1, 2, 3))
        # what went out is signed with the current secret only
        for m in mailu.received:
            assert verp.decode(m.mail_from, domain=DOMAIN, secret=NEW) is not None
            assert verp.decode(m.mail_from, domain=DOMAIN, secret=OLD) is None
            assert _token(ids[m.rcpt_tos[0]]["id"], NEW).encode() in m.data
        assert daemon.inbound is not None and daemon.inbound.port
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.inbound.port)
        await smtp.connect()
        # a bounce to the return path mail sent before the rotation had: accepted, acted on
        old_bounce = verp.encode(one["id"], domain=DOMAIN, secret=OLD)
        await smtp.sendmail("", [old_bounce], dsn("reader1@example.com", one["message_id"]))
        # mailto unsubscribe signed with the old secret: accepted
        old_mailto = f"{_token(two['id'], OLD)}@{DOMAIN}"
        await smtp.sendmail("reader2@example.com", [old_mailto], b"Subject: unsub\r\n\r\n.\r\n")
        # the expired secret: refused at RCPT, for bounces and unsubscribes alike
        for bad in (
            verp.encode(three["id"], domain=DOMAIN, secret=EXPIRED),
            f"{_token(three['id'], EXPIRED)}@{DOMAIN}",
        ):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await smtp.sendmail("", [bad], dsn("reader3@example.com", three["message_id"]))
        await smtp.quit()
        # one-click: the expired secret's token is unknown, the old one's works
        assert daemon.admin_address is not None
        base = f"http://127.0.0.1:{daemon.admin_address[1]}/v1/unsubscribe/"
        body = b"List-Unsubscribe=One-Click"
        async with aiohttp.ClientSession() as http:
            expired = await http.post(base + _token(three["id"], EXPIRED), data=body)
            assert expired.status == 404
            r = await http.post(base + _token(three["id"], OLD), data=body)
            assert r.status == 200, await r.text()
        await _wait(pool, f"SELECT state FROM queue.jobs WHERE id = {one['id']}", "bounced")
        await _wait(pool, "SELECT count(*) FROM oltp.suppressions", 3)
        sup = {
            r["address"]: r["reason"] for r in await pool.fetch("SELECT * FROM oltp.suppressions")
        }
        assert sup == {
            "reader1@example.com": "userunknown",
            "reader2@example.com": "unsubscribed",
            "reader3@example.com": "unsubscribed",
        }
    finally:
        daemon._on_stop(signal.SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0
