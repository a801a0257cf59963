"""Attacks on the inbound listener as an outsider would make them (real SMTP, real PostgreSQL).

The attacker can send any SMTP traffic, has received our mail (so holds genuine signed originals
of mail sent to *them*, our Message-ID format and their own VERP Return-Path) and reads the code.
Each test is one attack and asserts what it gets now.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from engine.compose._base36 import encode as base36
from engine.config import FblReporter
from engine.dkim.keys import generate_key
from engine.dkim.sign import SigningKey, load_signing_key, sign_message
from engine.inbound.limits import IP_CONNECTIONS, IP_RATE_MINUTE, PeerLimits
from engine.inbound.trust import MAX_DNS_LOOKUPS, InboundTrust, OwnKey, StaticKeys
from engine.resolver import TtlCache
from engine.store import inbound as inbound_store
from tests.integration.test_inbound import arf, dsn
from tests.integration.test_inbound_quarantine import _job, _until
from tests.security.listener import (
    FBL,
    SECRET,
    VERP_DOMAIN,
    listener_config,
    read_reply,
    running_listener,
    verp_address,
)

_PEM, _TXT = generate_key("rsa-sha256", 1024)
OURS = load_signing_key(_PEM, domain="acme.example", selector="s1")


def our_trust(**kw: object) -> InboundTrust:
    """The daemon's trust with our signing key (tenant acme)."""
    keys = StaticKeys({("acme.example", "s1"): [OwnKey("acme", "rsa-sha256", _TXT.encode())]})
    return InboundTrust(verp_domain=VERP_DOMAIN, verp_secret=SECRET, keys=keys, **kw)  # type: ignore[arg-type]


def original(to: str, mid: str, keys: Sequence[SigningKey] = (OURS,)) -> bytes:
    """The mail as we sent it to ``to`` (our signature over From, To, Message-ID...)."""
    msg = (
        f"From: news@acme.example\r\nTo: {to}\r\nSubject: Our news\r\n"
        f"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: {mid}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain\r\n\r\nThe news.\r\n"
    ).encode()
    return sign_message(msg, list(keys))


async def relayed(pool: asyncpg.Pool, to: str, mid: str) -> int:
    """A relayed job of tenant acme to ``to`` with Message-ID ``mid``."""
    job_id, _ = await _job(pool, to)
    await pool.execute(
        "UPDATE queue.jobs SET state = 'relayed', message_id = $2 WHERE id = $1", job_id, mid
    )
    return job_id


async def send(port: int, rcpts: list[str], message: bytes, sender: str = "x@isp.example") -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
    await smtp.connect()
    await smtp.sendmail(sender, rcpts, message)
    await smtp.quit()


async def processed(pool: asyncpg.Pool, count: int) -> None:
    await _until(
        pool,
        "SELECT count(*) >= $1 FROM content.inbound_messages WHERE processed_at IS NOT NULL",
        count,
    )


async def suppressed(pool: asyncpg.Pool) -> set[str]:
    return {r["address"] for r in await pool.fetch("SELECT address FROM oltp.suppressions")}


async def test_complaint_about_a_shared_message_id_hits_only_the_signed_recipient(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """A raw-content campaign keeps its own Message-ID: every job of it has the same one. The
    attacker, one recipient, complains with the genuine signed original of *their* copy. Before:
    the job picked by Message-ID alone was any of the campaign's (here the victim's): the victim
    was suppressed. Now: our signature's signed To picks the job; the victim is untouched."""
    mid = f"<campaign.{secrets.token_hex(4)}@acme.example>"
    attacker = await relayed(pool, "attacker@example.com", mid)
    victim = await relayed(pool, "victim@example.com", mid)
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, trust=our_trust()) as service:
        assert service.port
        mine = original("attacker@example.com", mid)
        await send(service.port, [FBL], arf("attacker@example.com", mid, mine))
        await processed(pool, 1)
    assert await suppressed(pool) == {"attacker@example.com"}
    states = dict(await pool.fetch("SELECT id, state FROM queue.jobs"))  # type: ignore[arg-type]
    assert states == {attacker: "complained", victim: "relayed"}


async def test_shared_message_id_without_a_signed_to_proves_nothing(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """The same attack with an original whose To the attacker rewrote (the signature then
    fails) or with two jobs and a signature that does not single one out: nothing acts."""
    mid = f"<campaign.{secrets.token_hex(4)}@acme.example>"
    await relayed(pool, "attacker@example.com", mid)
    await relayed(pool, "victim@example.com", mid)
    cfg = listener_config(clean_db, redis_prefix)
    tampered = original("attacker@example.com", mid).replace(b"To: attacker@", b"To: victim@")
    async with running_listener(cfg, pool, trust=our_trust()) as service:
        assert service.port
        await send(service.port, [FBL], arf("victim@example.com", mid, tampered))
        await processed(pool, 1)
    assert await suppressed(pool) == set()


async def test_a_second_message_id_above_a_genuine_signature_is_not_the_job(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """Duplicate fields: the attacker puts the victim's Message-ID (and To) above the genuine
    signed ones of their own copy. DKIM reads fields bottom-up, so the signature still verifies
    — over the attacker's own Message-ID. Only the attacker's job is touched."""
    mine_mid = f"<pm.{secrets.token_hex(4)}@acme.example>"
    victim_mid = f"<pm.{secrets.token_hex(4)}@acme.example>"
    attacker = await relayed(pool, "attacker@example.com", mine_mid)
    victim = await relayed(pool, "victim@example.com", victim_mid)
    cfg = listener_config(clean_db, redis_prefix)
    forged = (
        f"Message-ID: {victim_mid}\r\nTo: victim@example.com\r\nmessage-id:{victim_mid}\r\n"
    ).encode() + original("attacker@example.com", mine_mid)
    async with running_listener(cfg, pool, trust=our_trust()) as service:
        assert service.port
        await send(service.port, [FBL], arf("victim@example.com", victim_mid, forged))
        await processed(pool, 1)
    states = dict(await pool.fetch("SELECT id, state FROM queue.jobs"))  # type: ignore[arg-type]
    assert states == {attacker: "complained", victim: "relayed"}
    assert await suppressed(pool) == {"attacker@example.com"}


async def test_rcpt_flood_is_capped(clean_db: str, redis_prefix: str, pool: asyncpg.Pool) -> None:
    """Thousands of pipelined RCPT TO of the FBL address in one transaction. Before: every one
    was accepted, kept in memory, checked (HMAC) again on the event loop at DATA and stored in
    the row's rcpt_to. Now: past MAX_RCPTS the listener answers 452 (RFC 5321 §4.5.3.1.10)."""
    from engine.inbound.listener import MAX_RCPTS

    cfg = listener_config(clean_db, redis_prefix)
    flood = 3 * MAX_RCPTS
    async with running_listener(cfg, pool, run=False) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            assert (await read_reply(reader))[0] == 220
            writer.write(b"EHLO attacker\r\n")
            assert (await read_reply(reader))[0] == 250
            writer.write(b"MAIL FROM:<x@isp.example>\r\n" + f"RCPT TO:<{FBL}>\r\n".encode() * flood)
            await writer.drain()
            codes = [(await read_reply(reader))[0] for _ in range(flood + 1)]
            assert codes[0] == 250
            assert codes[1 : MAX_RCPTS + 1] == [250] * MAX_RCPTS
            assert set(codes[MAX_RCPTS + 1 :]) == {452}
            writer.write(b"DATA\r\n")
            assert (await read_reply(reader))[0] == 354
            writer.write(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            await writer.drain()
            assert (await read_reply(reader))[0] == 250
        finally:
            writer.close()
    stored = await pool.fetchval("SELECT cardinality(rcpt_to) FROM content.inbound_messages")
    assert stored == MAX_RCPTS


def _reporter_key(domain: str) -> SigningKey:
    pem, _ = generate_key("rsa-sha256", 1024)
    return load_signing_key(pem, domain=domain, selector=secrets.token_hex(4))


async def test_reporter_dns_lookups_per_report_are_bounded(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """An ARF signed 8 times, each with d= a fresh random name under a configured reporter's
    domain (aligned, body hash right, keys the attacker made): each signature meant one DNS
    query nobody can cache (a random-subdomain flood at the reporter's name servers, paid for
    by our daemon, ~8 queries per message and per reporter). Now at most MAX_DNS_LOOKUPS."""
    lookups: list[str] = []

    async def resolve(name: str, rdtype: str) -> list[str]:
        lookups.append(name)
        return []

    reporters = [FblReporter(domain="isp.example"), FblReporter(domain="mail.isp.example")]
    # As the daemon's: behind its TTL cache (which cannot help against names never seen before).
    trust = our_trust(reporters=reporters, resolve=TtlCache(resolve, 300.0, 60.0))
    keys = [_reporter_key(f"r{secrets.token_hex(3)}.mail.isp.example") for _ in range(8)]
    report = sign_message(arf("x@example.com", "<a@b>"), keys)
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, trust=trust) as service:
        assert service.port
        await send(service.port, [FBL], report)
        await processed(pool, 1)
    assert 0 < len(lookups) <= MAX_DNS_LOOKUPS


async def test_reporter_mailbox_user_cannot_name_any_job_by_message_id(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """A configured reporter that is also a mailbox provider signs everything its users send
    (d= its domain, From signed). The attacker, a user there, sends an ARF naming the victim's
    Message-ID (predictable: job id in base36 and a tenant tag) with a forged quoted original.
    Before: reporter-authenticated, matched by that Message-ID alone: the victim was suppressed.
    Now a reporter's Message-ID names the job only when the report names its recipient too."""
    victim_mid = f"<pm.{secrets.token_hex(4)}.tag@acme.example>"
    other_mid = f"<pm.{secrets.token_hex(4)}.tag@acme.example>"
    victim = await relayed(pool, "victim@example.com", victim_mid)
    reported = await relayed(pool, "reported@example.com", other_mid)
    pem, txt = generate_key("rsa-sha256", 1024)
    mailbox = load_signing_key(pem, domain="isp.example", selector="users")

    async def resolve(name: str, rdtype: str) -> list[str]:
        return [txt] if name == "users._domainkey.isp.example" else []

    trust = our_trust(reporters=[FblReporter(domain="isp.example")], resolve=resolve)
    forged = arf("attacker@isp.example", victim_mid).replace(
        b"To: attacker@isp.example", b"To: someone@example.com"
    )
    genuine = arf("reported@example.com", other_mid)
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, trust=trust) as service:
        assert service.port
        await send(service.port, [FBL], sign_message(forged, [mailbox]))
        # A genuine report of the same reporter: its recipient and Message-ID agree.
        await send(service.port, [FBL], sign_message(genuine, [mailbox]))
        await processed(pool, 2)
    states = dict(await pool.fetch("SELECT id, state FROM queue.jobs"))  # type: ignore[arg-type]
    assert states == {victim: "relayed", reported: "complained"}
    assert await suppressed(pool) == {"reported@example.com"}


async def test_reporter_addresses_shut_out_its_mailbox_users(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """The same mailbox user, now aiming at a recipient they know: a redacted-looking report
    with our Feedback-ID (visible in any mail of the tenant) and the victim's address. With the
    reporter's domain alone that is a genuine report, matched through the Feedback-ID. With the
    reporter's ``addresses`` configured, only its FBL sender is believed."""
    victim = await relayed(pool, "victim@example.com", "<pm.v@acme.example>")
    reported = await relayed(pool, "reported@example.com", "<pm.r@acme.example>")
    pem, txt = generate_key("rsa-sha256", 1024)
    mailbox = load_signing_key(pem, domain="isp.example", selector="users")

    async def resolve(name: str, rdtype: str) -> list[str]:
        return [txt] if name == "users._domainkey.isp.example" else []

    def redacted(rcpt: str, sender: str) -> bytes:
        original = (
            b"From: news@acme.example\r\nTo: xxxxx@example.com\r\n"
            b"Feedback-ID: -:acme:acme.example:pm\r\nSubject: hi\r\n\r\nbody\r\n"
        )
        report = arf(rcpt, "<redacted@isp.example>", original)
        return sign_message(report.replace(b"From: fbl@isp.example", sender.encode()), [mailbox])

    reporter = FblReporter(domain="isp.example", addresses=["FBL@isp.example"])
    trust = our_trust(reporters=[reporter], resolve=resolve)
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, trust=trust) as service:
        assert service.port
        await send(service.port, [FBL], redacted("victim@example.com", "From: user@isp.example"))
        await send(service.port, [FBL], redacted("reported@example.com", "From: fbl@isp.example"))
        await processed(pool, 2)
    states = dict(await pool.fetch("SELECT id, state FROM queue.jobs"))  # type: ignore[arg-type]
    assert states == {victim: "relayed", reported: "complained"}
    assert await suppressed(pool) == {"reported@example.com"}


async def test_noop_keepalive_cannot_hold_a_slot_for_good(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """Slowloris by commands: a NOOP before every idle timeout kept a session (and its place in
    max_connections) open for ever; 20 IPs x 10 sessions held all 200. Now a session ends after
    max_session_s, busy or not, with a 421."""
    cfg = listener_config(clean_db, redis_prefix, timeout_s=1.0, max_session_s=1.5)
    async with running_listener(cfg, pool, run=False) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        codes: list[int] = []
        try:
            assert (await read_reply(reader))[0] == 220
            while loop.time() - started < 5.0:
                writer.write(b"NOOP\r\n")
                try:
                    code, _ = await read_reply(reader)
                except ConnectionError:
                    break
                codes.append(code)
                if code != 250:
                    break
                await asyncio.sleep(0.3)  # well inside the 1 s idle timeout
        finally:
            writer.close()
        lasted = loop.time() - started
    assert codes[-1] == 421
    assert 1.4 < lasted < 3.0


def test_ipv6_address_per_connection_shares_its_64s_quotas() -> None:
    """A client with an IPv6 /64 (what one host is routinely given) used a new address per
    connection and message: each had fresh per-IP caps and quotas, so the per-IP limits did
    not limit it. Now an IPv6 client is counted by its /64 (and a mapped IPv4 as that IPv4)."""
    limits = PeerLimits(2, 3, clock=lambda: 1000.0)
    hosts = [f"2001:db8:1:2::{i:x}" for i in range(1, 10)]
    assert [limits.connect(h) for h in hosts[:3]] == [None, None, IP_CONNECTIONS]
    assert [limits.message(h) for h in hosts[3:7]] == [None, None, None, IP_RATE_MINUTE]
    assert limits.connect("2001:db8:1:3::1") is None  # another /64: another client
    assert limits.connect("::ffff:192.0.2.7") is None
    assert limits.connect("192.0.2.7") is None
    assert limits.connect("192.0.2.7") == IP_CONNECTIONS
    limits.disconnect(hosts[8])
    assert limits.connect(hosts[0]) is None


async def test_attacks_that_get_nothing_more_than_the_attackers_own_job(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """Regression set, each attack aimed at the victim's job with the attacker's own VERP
    address (from the Return-Path of mail sent to them) and the victim's predictable Message-ID:

    - an unsigned ARF to the attacker's VERP address -> unverified, nothing suppressed;
    - a DSN to the attacker's VERP address naming the victim as Final-Recipient -> only the
      attacker's own job bounces (the job's recipient is suppressed, never the report's);
    - an SES JSON complaint to the FBL address naming the victim -> unverified;
    - soft bounces with three different statuses replayed to one VERP address -> one soft
      bounce (soft_bounce_limit 2 never reached);
    - VERP tags moved: the attacker's tag on the victim's job id, on another prefix (u-, e-)
      or on another domain -> refused at RCPT.
    """
    victim_mid = f"<pm.{secrets.token_hex(4)}@acme.example>"
    victim = await relayed(pool, "victim@example.com", victim_mid)
    attacker = await relayed(pool, "attacker@example.com", "<pm.a1@acme.example>")
    other = await relayed(pool, "attacker2@example.com", "<pm.a2@acme.example>")
    cfg = listener_config(clean_db, redis_prefix, soft_bounce_limit=2)
    mine, mine2 = verp_address(attacker), verp_address(other)
    ses = (Path(__file__).parents[1] / "fixtures/bounces/own-ses-json-complaint.msg").read_bytes()
    ses = ses.replace(b"cleo@example.com", b"victim@example.com").replace(
        b"<20240311.1042.abc@mail.penguin-shop.example>", victim_mid.encode()
    )
    async with running_listener(cfg, pool, trust=our_trust()) as service:
        assert service.port
        await send(service.port, [mine], arf("victim@example.com", victim_mid))
        await send(service.port, [mine], dsn("victim@example.com", victim_mid))
        await send(service.port, [FBL], ses)
        for status, code in (("4.2.2", "452"), ("4.4.7", "451"), ("4.7.1", "450")):
            await send(service.port, [mine2], dsn("attacker2@example.com", "<x@y>", status, code))
        tag = mine.partition("@")[0].rsplit("-", 1)[1]
        moved = [
            f"b-{base36(victim)}-{tag}@{VERP_DOMAIN}",
            mine.replace("b-", "u-", 1),
            mine.replace("b-", "e-", 1),
            mine.replace(VERP_DOMAIN, "evil.example"),
        ]
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=20)
        await smtp.connect()
        await smtp.ehlo()
        await smtp.mail("x@isp.example")
        for address in moved:
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await smtp.rcpt(address)
        await smtp.quit()
        await processed(pool, 6)
    states = dict(await pool.fetch("SELECT id, state FROM queue.jobs"))  # type: ignore[arg-type]
    assert states == {victim: "relayed", attacker: "bounced", other: "bounced"}
    assert await suppressed(pool) == {"attacker@example.com"}
    kinds = await pool.fetch(
        "SELECT job_id, kind FROM oltp.events WHERE kind <> 'queued' ORDER BY id"
    )
    assert [(r["job_id"], r["kind"]) for r in kinds if r["job_id"] == victim] == [
        (victim, "unverified_complaint")
    ]
    soft = [r for r in kinds if r["job_id"] == other and r["kind"] == "soft_bounced"]
    assert len(soft) == 1


async def test_smtp_smuggling_end_markers_stay_inside_the_message(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """SMTP smuggling: a message relayed by a reporter's MTA (whose IP passes the reporter's
    SPF) hides a second transaction behind a non-standard end of data (bare LF or CR dots). Were
    any of them an end marker here, the hidden MAIL FROM the reporter would be believed. Only
    CRLF.CRLF ends DATA: one message is stored, holding every hidden line (dot-stuffing undone
    only at line starts after CRLF), and the client gets one 250 for it."""
    hidden = (
        b"MAIL FROM:<fbl@isp.example>\r\nRCPT TO:<" + FBL.encode() + b">\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nforged complaint\r\n"
    )
    body = (
        b"Subject: carrier\r\n\r\nfirst line\r\n..stuffed\r\n"
        + b"".join(end + hidden for end in (b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r.\r"))
        + b"last line\r\n"
    )
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool, run=False) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            assert (await read_reply(reader))[0] == 220
            writer.write(
                b"EHLO relay\r\nMAIL FROM:<x@isp.example>\r\nRCPT TO:<"
                + FBL.encode()
                + b">\r\nDATA\r\n"
            )
            assert [(await read_reply(reader))[0] for _ in range(4)] == [250, 250, 250, 354]
            for i in range(0, len(body), 7):  # small writes: markers split across reads
                writer.write(body[i : i + 7])
                await writer.drain()
            writer.write(b".\r\nQUIT\r\n")
            assert [(await read_reply(reader))[0] for _ in range(2)] == [250, 221]
        finally:
            writer.close()
        rows = await pool.fetch("SELECT id FROM content.inbound_messages")
        assert len(rows) == 1
        stored = await inbound_store.pending(
            pool, 10, exclude=set(), min_age_s=0.0, max_bytes=1 << 30
        )
    assert len(stored) == 1
    raw = stored[0].raw
    assert raw.count(b"forged complaint") == 5
    assert b"\r\n.stuffed\r\n" in raw and raw.endswith(b"last line\r\n")
