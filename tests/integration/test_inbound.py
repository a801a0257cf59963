"""Bounces and complaints over SMTP to the daemon's inbound listener: effects end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosmtplib
import asyncpg
import orjson
import pytest

from engine.compose import verp
from engine.config import Config
from engine.daemon import Daemon
from engine.dkim.keys import generate_key
from engine.enqueue import enqueue
from engine.store import tenants
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU

SECRET = "inbound-test-secret-5d0c7a2e9f14b3c8"
VERP_DOMAIN = "bounces.acme.example"


def dsn(rcpt: str, message_id: str, status: str = "5.1.1", code: str = "550") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.com\r\nTo: bounce@x\r\nSubject: Undelivered Mail\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {code} {status} user unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nFrom: news@acme.example\r\nTo: {rcpt}\r\n\r\n--B--\r\n"
    ).encode()


def arf(rcpt: str, message_id: str, original: bytes | None = None, ftype: str = "abuse") -> bytes:
    """A complaint about ``rcpt``; the quoted original is ``original`` (the mail as the reporter
    received it, our DKIM signature included) or else a forged header block naming
    ``message_id``."""
    if original is None:
        original = (
            f"Message-ID: {message_id}\r\nFrom: news@acme.example\r\nTo: {rcpt}\r\n"
            "Subject: hi\r\n\r\nbody\r\n"
        ).encode()
    return (
        (
            "From: fbl@isp.example\r\nTo: fbl@acme.example\r\nSubject: FW: complaint\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report;"
            ' boundary="ARF-7f3a"\r\n\r\n'
            "--ARF-7f3a\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
            "--ARF-7f3a\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: {ftype}\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n"
            f"Original-Rcpt-To: {rcpt}\r\n\r\n"
            "--ARF-7f3a\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode()
        + original
        + b"\r\n--ARF-7f3a--\r\n"
    )


def dkim_key(tmp_path: Path) -> dict[str, object]:
    """Our signing key: the daemon signs with it and believes complaints that carry it."""
    pem, _ = generate_key("rsa-sha256", 1024)
    path = tmp_path / "ours.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    return {
        "enabled": True,
        "signer": "thread",
        "keys": [{"domain": "acme.example", "selector": "s1", "private_key_file": str(path)}],
    }


def job(i: int, to: str) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"k{i}",
            "from": "news@acme.example",
            "to": to,
            "text": "hi",
        }
    )


@pytest.fixture
def inbound_cfg(clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path) -> Config:
    return make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1},
        shaping={"enabled": False},
        dkim=dkim_key(tmp_path),
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": VERP_DOMAIN,
            "verp_secret": SECRET,
            "fbl_addresses": ["fbl@acme.example"],
        },
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


async def test_bounce_and_complaint_effects(
    pool: asyncpg.Pool, inbound_cfg: Config, mailu: FakeMailU
) -> None:
    await tenants.add(pool, "acme")
    await enqueue(
        pool,
        [job(1, "gone@example.com"), job(2, "angry@example.com"), job(3, "fine@example.com")],
        max_message_bytes=10**6,
        max_age_s=3600,
    )
    daemon = Daemon(inbound_cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 3)
        assert daemon.inbound is not None and daemon.inbound.port
        port = daemon.inbound.port
        rows = {r["recipient"]: r for r in await pool.fetch("SELECT * FROM queue.jobs")}
        gone, angry = rows["gone@example.com"], rows["angry@example.com"]
        # the VERP address the relay saw is where the bounce comes back to
        verp_addr = next(m.mail_from for m in mailu.received if "gone@" in m.rcpt_tos[0])
        assert verp.decode(verp_addr, domain=VERP_DOMAIN, secret=SECRET) == gone["id"]
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await smtp.connect()
        await smtp.sendmail("", [verp_addr], dsn("gone@example.com", gone["message_id"]))
        # the complaint quotes the mail as it was received: our DKIM signature proves it
        received = next(m.data for m in mailu.received if "angry@" in m.rcpt_tos[0])
        await smtp.sendmail(
            "fbl@isp.example",
            ["fbl@acme.example"],
            arf("angry@example.com", angry["message_id"], received),
        )
        # not an open relay: anything but a valid VERP/FBL address is refused at RCPT
        forged = verp_addr.replace(verp_addr.split("-")[2][:3], "zzz")
        for bad in ("someone@example.org", forged, f"b-1-0000000000@{VERP_DOMAIN}"):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await smtp.sendmail("x@y.example", [bad], b"Subject: x\r\n\r\nhi\r\n")
        await smtp.quit()
        await _wait(pool, f"SELECT state FROM queue.jobs WHERE id = {gone['id']}", "bounced")
        await _wait(pool, f"SELECT state FROM queue.jobs WHERE id = {angry['id']}", "complained")
        sup = {r["address"]: r for r in await pool.fetch("SELECT * FROM oltp.suppressions")}
        assert sup["gone@example.com"]["reason"] == "userunknown"
        assert sup["gone@example.com"]["expires_at"] is None
        assert sup["angry@example.com"]["source"] == "complaint"
        stats = await pool.fetchrow(
            "SELECT sum(bounced_hard) b, sum(complained) c FROM olap.daily_stats"
        )
        assert (stats["b"], stats["c"]) == (1, 1)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NOT NULL"
            )
            == 2
        )
        # a new job to the suppressed address is never sent
        await enqueue(pool, [job(4, "gone@example.com")], max_message_bytes=10**6, max_age_s=3600)
        await _wait(pool, "SELECT state FROM queue.jobs WHERE idempotency_key = 'k4'", "suppressed")
        assert sum(1 for m in mailu.received if "gone@" in m.rcpt_tos[0]) == 1
    finally:
        daemon._on_stop(__import__("signal").SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0


async def test_one_click_and_mailto_unsubscribe(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    import aiohttp

    cfg = make_config(
        clean_db,
        redis_prefix,
        relay={"nodes": [{"name": "n0", "host": "127.0.0.1", "port": mailu.port, "tls": "none"}]},
        queue={"feeder_interval_s": 0.1},
        shaping={"enabled": False},
        dkim={"enabled": False},
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": VERP_DOMAIN,
            "verp_secret": SECRET,
            "unsubscribe_url": "https://unsub.acme.example/v1/unsubscribe",
        },
        admin={"listen": "127.0.0.1:0", "token": "t" * 32},
    )
    await tenants.add(pool, "acme")
    bulk = [orjson.loads(job(i, f"reader{i}@example.com")) | {"campaign_id": "c1"} for i in (1, 2)]
    await enqueue(pool, [orjson.dumps(b) for b in bulk], max_message_bytes=10**6, max_age_s=3600)
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", 2)
        heads = {m.rcpt_tos[0]: m.data.split(b"\r\n\r\n")[0] for m in mailu.received}
        h1 = heads["reader1@example.com"].decode()
        assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in h1
        url = h1.split("<https://unsub.acme.example/v1/unsubscribe/")[1].split(">")[0]
        mailto = heads["reader2@example.com"].decode().split("<mailto:")[1].split(">")[0]
        # one-click: POST to the admin port (no bearer token: the HMAC token authorises)
        assert daemon.admin_address is not None
        admin = daemon.admin_address[1]
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{admin}/v1/unsubscribe/"
            r = await http.post(base + url, data=b"List-Unsubscribe=One-Click")
            assert r.status == 200, await r.text()
            forged = await http.post(base + url[:-2] + "zz", data=b"List-Unsubscribe=One-Click")
            assert forged.status == 404
        # mailto: a message to the per-recipient address
        assert daemon.inbound is not None and daemon.inbound.port
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.inbound.port)
        await smtp.connect()
        await smtp.sendmail("reader2@example.com", [mailto], b"Subject: unsubscribe\r\n\r\n.\r\n")
        await smtp.quit()
        await _wait(pool, "SELECT count(*) FROM oltp.suppressions WHERE reason = 'unsubscribed'", 2)
        assert (
            await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind = 'unsubscribed'") == 2
        )
        assert await pool.fetchval("SELECT sum(unsubscribed) FROM olap.daily_stats") == 2
    finally:
        daemon._on_stop(__import__("signal").SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0
