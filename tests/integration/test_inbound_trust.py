"""Inbound trust end to end: which complaints and bounces change state (DESIGN §7 Trust).

Real SMTP to the daemon's listener (which signs with its own DKIM key and believes it), real
PostgreSQL. The attacker knows every Message-ID (they are predictable) and can mail the public
FBL address; only proof moves state.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import aiosmtplib
import asyncpg
import orjson
import pytest

from engine import metrics
from engine.compose import verp
from engine.config import Config
from engine.daemon import Daemon
from engine.dkim.keys import generate_key
from engine.dkim.sign import load_signing_key, sign_message
from engine.enqueue import enqueue
from engine.inbound.effects import apply
from engine.inbound.evidence import analyse
from engine.inbound.listener import InboundService
from engine.inbound.matching import InboundItem
from engine.inbound.trust import InboundTrust
from engine.store import inbound as inbound_store
from engine.store import tenants
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU
from tests.integration.test_inbound import SECRET, VERP_DOMAIN, _wait, arf, dkim_key, dsn

FBL = "fbl@acme.example"


def job(key: str, to: str) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": key,
            "from": "news@acme.example",
            "to": to,
            "text": "hi",
        }
    )


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def _events(pool: asyncpg.Pool, job_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT kind FROM oltp.events WHERE job_id = $1 AND kind NOT IN ('queued', 'relayed')"
        " ORDER BY id",
        job_id,
    )
    return [r["kind"] for r in rows]


async def test_only_proven_reports_change_state(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU, tmp_path: Path
) -> None:
    cfg = make_config(
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
            "fbl_addresses": [FBL],
            "soft_bounce_limit": 2,
        },
    )
    names = ["signed", "forged", "tampered", "foreign", "nofbl", "hard", "soft", "odd", "authfail"]
    await tenants.add(pool, "acme")
    await enqueue(
        pool,
        [job(n, f"{n}@example.com") for n in names],
        max_message_bytes=10**6,
        max_age_s=3600,
    )
    other_pem, _ = generate_key("rsa-sha256", 1024)
    not_ours = load_signing_key(other_pem, domain="acme.example", selector="s1")
    odd_type = "x" + secrets.token_hex(6)
    other_before = _sample("engine_complaints_total", feedback_type="other")
    unverified_before = _sample("engine_inbound_unverified_total", kind="complaint")
    daemon = Daemon(cfg, None)
    task = asyncio.create_task(daemon.run())
    try:
        await _wait(pool, "SELECT count(*) FROM queue.jobs WHERE state = 'relayed'", len(names))
        rows = {r["idempotency_key"]: r for r in await pool.fetch("SELECT * FROM queue.jobs")}
        got = {m.rcpt_tos[0].split("@")[0]: m for m in mailu.received}
        assert daemon.inbound is not None and daemon.inbound.port
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.inbound.port)
        await smtp.connect()

        async def complain(name: str, original: bytes | None, ftype: str = "abuse") -> None:
            rcpt = f"{name}@example.com"
            report = arf(rcpt, rows[name]["message_id"], original, ftype)
            await smtp.sendmail("fbl@isp.example", [FBL], report)

        # our own signature in the quoted original: believed
        await complain("signed", got["signed"].data)
        # the Message-ID guessed right, no signature: a forgery
        await complain("forged", None)
        # our signature, but a signed header changed (here: the To, aiming at someone else)
        tampered = got["tampered"].data.replace(b"To: tampered@", b"To: victim@")
        await complain("tampered", tampered)
        # a signature with our d= and s= made by a key we do not hold
        head, _, body = got["foreign"].data.partition(b"\r\n\r\n")
        unsigned = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.startswith((b"DKIM", b" ", b"\t"))
        )
        await complain("foreign", sign_message(unsigned + b"\r\n\r\n" + body, [not_ours]))
        # an attacker-chosen Feedback-Type on a believed complaint: the label is "other"
        await complain("odd", got["odd"].data, odd_type)
        # a proven RFC 6591 authentication-failure report: about our DKIM/SPF, not a complaint
        await complain("authfail", got["authfail"].data, "auth-failure")
        # a DSN to the FBL address (no VERP), naming the job by Message-ID: informs only
        await smtp.sendmail("", [FBL], dsn("nofbl@example.com", rows["nofbl"]["message_id"]))
        # a hard bounce to the VERP address, replayed: counted once
        hard_verp = got["hard"].mail_from
        hard = dsn("hard@example.com", rows["hard"]["message_id"])
        for _ in range(2):
            await smtp.sendmail("", [hard_verp], hard)
        # one soft bounce replayed three times: never reaches soft_bounce_limit = 2
        soft = dsn("soft@example.com", rows["soft"]["message_id"], "4.2.2", "452")
        for _ in range(3):
            await smtp.sendmail("", [got["soft"].mail_from], soft)
        await smtp.quit()
        await _wait(
            pool,
            "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NOT NULL",
            12,
        )
    finally:
        daemon._on_stop(signal.SIGTERM)
        assert await asyncio.wait_for(task, 15) == 0

    states = {
        r["idempotency_key"]: r["state"] for r in await pool.fetch("SELECT * FROM queue.jobs")
    }
    suppressed = {r["address"] for r in await pool.fetch("SELECT address FROM oltp.suppressions")}
    assert states == {
        "signed": "complained",
        "odd": "complained",
        "forged": "relayed",
        "tampered": "relayed",
        "foreign": "relayed",
        "nofbl": "relayed",
        "hard": "bounced",
        "soft": "bounced",
        "authfail": "relayed",
    }
    assert suppressed == {"signed@example.com", "odd@example.com", "hard@example.com"}
    assert await _events(pool, rows["forged"]["id"]) == ["unverified_complaint"]
    assert await _events(pool, rows["tampered"]["id"]) == ["unverified_complaint"]
    assert await _events(pool, rows["foreign"]["id"]) == ["unverified_complaint"]
    assert await _events(pool, rows["nofbl"]["id"]) == ["unverified_bounce"]
    assert await _events(pool, rows["hard"]["id"]) == ["bounced"]
    assert await _events(pool, rows["soft"]["id"]) == ["soft_bounced"]
    assert await _events(pool, rows["signed"]["id"]) == ["complained"]
    assert await _events(pool, rows["authfail"]["id"]) == ["auth_failure"]
    stats = await pool.fetchrow(
        "SELECT sum(bounced_hard) h, sum(bounced_soft) s, sum(complained) c FROM olap.daily_stats"
    )
    assert (stats["h"], stats["s"], stats["c"]) == (1, 1, 2)
    assert _sample("engine_complaints_total", feedback_type="other") == other_before + 1
    assert _sample("engine_complaints_total", feedback_type=odd_type) == 0
    assert _sample("engine_inbound_unverified_total", kind="complaint") == unverified_before + 3


async def _relayed_job(pool: asyncpg.Pool, key: str, to: str, message_id: str) -> int:
    await tenants.add(pool, "acme")
    await enqueue(pool, [job(key, to)], max_message_bytes=10**6, max_age_s=3600)
    job_id: int = await pool.fetchval(
        "UPDATE queue.jobs SET state = 'relayed', message_id = $2 WHERE idempotency_key = $1"
        " RETURNING id",
        key,
        message_id,
    )
    return job_id


def reporter_config(dsn_: str, prefix: str, record: str, require: str) -> Config:
    return make_config(
        dsn_,
        prefix,
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": VERP_DOMAIN,
            "verp_secret": SECRET,
            "fbl_addresses": [FBL],
            "timeout_s": 5.0,
            "fbl_reporters": [{"domain": "isp.example", "require": require}],
        },
        dns={
            "txt_overrides": {
                "r1._domainkey.fbl.isp.example": [record],
                "fbl.isp.example": ["v=spf1 ip4:192.0.2.7 -all"],
            }
        },
    )


async def test_configured_reporter_with_dkim_is_believed_over_smtp(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str
) -> None:
    pem, record = generate_key("rsa-sha256", 1024)
    reporter = load_signing_key(pem, domain="fbl.isp.example", selector="r1")
    cfg = reporter_config(clean_db, redis_prefix, record, "dkim")
    mid = "<pm.zz.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "r", "reader@example.com", mid)
    other = await _relayed_job(
        pool, "r2", "other@example.com", "<pm.zy.aaaaaaaaaaaaa@acme.example>"
    )
    # the reporter redacts the original: no signature of ours survives, the Message-ID does
    report = arf("reader@example.com", mid)
    signed = sign_message(report, [reporter])
    # the same report signed by the reporter, then altered: its body hash fails
    altered = sign_message(
        arf("other@example.com", "<pm.zy.aaaaaaaaaaaaa@acme.example>"), [reporter]
    )
    altered = altered.replace(b"This is an abuse report.", b"This is an abuse report!")
    trust = InboundTrust.from_config(cfg)
    service = InboundService(cfg.inbound, pool, trust=trust)
    await service.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(service.run(stop))
    try:
        assert service.port
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port)
        await smtp.connect()
        await smtp.sendmail("fbl@fbl.isp.example", [FBL], signed)
        await smtp.sendmail("fbl@fbl.isp.example", [FBL], altered)
        await smtp.quit()
        await _wait(
            pool, "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NOT NULL", 2
        )
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
        await service.stop()
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id) == "complained"
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", other) == "relayed"
    assert await _events(pool, other) == ["unverified_complaint"]
    sup = {r["address"] for r in await pool.fetch("SELECT address FROM oltp.suppressions")}
    assert sup == {"reader@example.com"}


@pytest.mark.parametrize(("peer", "acts"), [("192.0.2.7", True), ("192.0.2.99", False)])
async def test_configured_reporter_with_spf(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, peer: str, acts: bool
) -> None:
    _, record = generate_key("rsa-sha256", 1024)
    cfg = reporter_config(clean_db, redis_prefix, record, "spf")
    mid = "<pm.zx.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "s", "spf@example.com", mid)
    raw = arf("spf@example.com", mid)
    inbound_id = await inbound_store.store_raw(
        pool, raw, peer=peer, mail_from="fbl@fbl.isp.example", rcpt_to=[FBL],
        verp_job_id=None, fbl=True,
    )  # fmt: skip
    a = analyse(raw, FBL)
    item = InboundItem(inbound_id, a.report, None, True, peer, "fbl@fbl.isp.example", a.evidence)
    effects = await apply(pool, [item], trust=InboundTrust.from_config(cfg))
    assert [e.kind for e in effects] == (["complained"] if acts else ["unverified_complaint"])
    state = await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id)
    assert state == ("complained" if acts else "relayed")
    # replayed: counted once
    if acts:
        again = await apply(pool, [item], trust=InboundTrust.from_config(cfg))
        assert [e.kind for e in again] == ["replayed"]
        assert await pool.fetchval("SELECT sum(complained) FROM olap.daily_stats") == 1


async def test_dsn_with_our_envid_acts_without_verp(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str
) -> None:
    from engine.compose.verp import envid

    cfg = reporter_config(clean_db, redis_prefix, "v=DKIM1; p=", "dkim")
    mid = "<pm.zw.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "e", "gone@example.com", mid)
    ours = envid(job_id, domain=VERP_DOMAIN, secret=SECRET)
    forged = envid(job_id, domain=VERP_DOMAIN, secret="not-our-secret-0123456789abcdef")
    trust = InboundTrust.from_config(cfg)
    results = []
    for value in (forged, ours):
        raw = dsn("gone@example.com", mid).replace(
            b"Reporting-MTA: dns; mx.example.com\r\n",
            b"Reporting-MTA: dns; mx.example.com\r\nOriginal-Envelope-Id: "
            + value.encode()
            + b"\r\n",
        )
        a = analyse(raw, FBL)
        item = InboundItem(0, a.report, None, True, "198.51.100.1", "", a.evidence)
        results.extend(e.kind for e in await apply(pool, [item], trust=trust))
    assert results == ["unverified_bounce", "bounced_hard"]
    assert verp.decode(f"{ours}@{VERP_DOMAIN}", domain=VERP_DOMAIN, secret=SECRET) is None


def redacted_arf(rcpt: str, original_head: str) -> bytes:
    """A complaint whose reporter kept only some of the original's header fields."""
    return (
        "From: fbl@fbl.isp.example\r\nTo: fbl@acme.example\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="R"\r\n\r\n'
        "--R\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nVersion: 1\r\nOriginal-Rcpt-To: {rcpt}\r\n\r\n"
        f"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_head}\r\n--R--\r\n"
    ).encode()


@pytest.mark.parametrize("via", ["feedback-id", "return-path"])
@pytest.mark.parametrize("peer", ["192.0.2.7", "203.0.113.9"])
async def test_redacted_original_is_matched_only_for_an_authenticated_reporter(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, via: str, peer: str
) -> None:
    _, record = generate_key("rsa-sha256", 1024)
    cfg = reporter_config(clean_db, redis_prefix, record, "spf")
    job_id = await _relayed_job(pool, "fid", "hidden@example.com", "<pm.zv.x@acme.example>")
    if via == "feedback-id":
        head = "Feedback-ID: -:acme:acme.example:pm\r\nSubject: hi"
    else:
        head = f"Return-Path: <{verp.encode(job_id, domain=VERP_DOMAIN, secret=SECRET)}>"
    a = analyse(redacted_arf("hidden@example.com", head), FBL)
    item = InboundItem(0, a.report, None, True, peer, "fbl@fbl.isp.example", a.evidence)
    effects = await apply(pool, [item], trust=InboundTrust.from_config(cfg))
    authenticated = peer == "192.0.2.7"
    assert [(e.kind, e.job_id) for e in effects] == (
        [("complained", job_id)] if authenticated else [("ignored", None)]
    )


@pytest.mark.parametrize(("owner", "acts"), [("acme", True), (None, True), ("globex", False)])
async def test_our_signature_acts_only_for_the_tenant_owning_the_key(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, owner: str | None, acts: bool
) -> None:
    from engine.inbound.trust import OwnKey, StaticKeys

    pem, record = generate_key("rsa-sha256", 1024)
    key = load_signing_key(pem, domain="acme.example", selector="t1")
    mid = "<pm.zu.x@acme.example>"
    job_id = await _relayed_job(pool, "own", "own@example.com", mid)
    original = sign_message(
        f"From: news@acme.example\r\nTo: own@example.com\r\nMessage-ID: {mid}\r\n"
        "Subject: hi\r\n\r\nhello\r\n".encode(),
        [key],
    )
    keys = StaticKeys({("acme.example", "t1"): [OwnKey(owner, key.algorithm, record.encode())]})
    trust = InboundTrust(verp_domain=VERP_DOMAIN, verp_secret=SECRET, keys=keys)
    a = analyse(arf("own@example.com", mid, original), FBL)
    item = InboundItem(0, a.report, None, True, "198.51.100.2", "x@isp.example", a.evidence)
    effects = await apply(pool, [item], trust=trust)
    assert [e.kind for e in effects] == (["complained"] if acts else ["unverified_complaint"])
    state = await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", job_id)
    assert state == ("complained" if acts else "relayed")
