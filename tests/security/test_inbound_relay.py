"""The inbound listener is not an open relay, cannot be fed forged bounces, and limits each IP."""

from __future__ import annotations

import asyncio

import aiosmtplib
import asyncpg
import pytest

from engine.config import Config
from tests.security.listener import (
    FBL,
    VERP_DOMAIN,
    listener_config,
    read_reply,
    running_listener,
    verp_address,
)

MESSAGE = b"From: x@isp.example\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def listener_cfg(clean_db: str, redis_prefix: str) -> Config:
    return listener_config(clean_db, redis_prefix)


def _forgeries() -> list[str]:
    good = verp_address(12345)
    local, _, domain = good.partition("@")
    prefix, job36, tag = local.split("-")
    flipped = tag[:-1] + ("a" if tag[-1] != "a" else "b")
    return [
        # relaying to the outside world, every classic trick
        "victim@example.org",
        "postmaster@example.org",
        f"victim@example.org@{VERP_DOMAIN}",
        f"victim%example.org@{VERP_DOMAIN}",
        f"@{VERP_DOMAIN}:victim@example.org",
        f'"victim@example.org"@{VERP_DOMAIN}',
        f"victim!example.org@{VERP_DOMAIN}",
        f"anyone@{VERP_DOMAIN}",
        f"postmaster@{VERP_DOMAIN}",
        f"fbl@{VERP_DOMAIN}",
        "fbl@acme.example.evil.org",
        # forged or damaged VERP tags
        f"{prefix}-{job36}-{flipped}@{domain}",  # one character off
        f"{prefix}-{job36}-{tag[:-1]}@{domain}",  # too short
        f"{prefix}-{job36}-{tag}0@{domain}",  # too long
        f"{prefix}-{job36}-0000000000@{domain}",
        f"{prefix}-zz-{tag}@{domain}",  # the tag of another job
        f"x-{job36}-{tag}@{domain}",  # another prefix
        f"{prefix}-{job36}-{tag}@other.example",  # right tag, wrong domain
        verp_address(12345, secret="guessed-secret"),  # made with another secret
        verp_address(12345, domain="bounces.evil.example"),
        f"{prefix}-{job36}-{tag}-extra@{domain}",
        f"{prefix}--{job36}-{tag}@{domain}",
        f"{prefix}-{job36}\x00-{tag}@{domain}",
    ]


async def test_only_verp_and_fbl_recipients_are_accepted(
    pool: asyncpg.Pool, listener_cfg: Config
) -> None:
    async with running_listener(listener_cfg, pool) as service:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        try:
            accepted = []
            for rcpt in _forgeries():
                if "\x00" in rcpt:
                    continue  # aiosmtplib will not send it; see the raw-bytes test below
                await smtp.mail("attacker@isp.example")
                try:
                    reply = await smtp.rcpt(rcpt)
                    accepted.append((rcpt, reply.code))
                except aiosmtplib.SMTPRecipientRefused as exc:
                    assert exc.code >= 550, (rcpt, exc)  # 553: aiosmtpd refuses the syntax
                await smtp.rset()
            assert not accepted, f"accepted as recipients: {accepted}"
            # The legitimate ones, including an upper-cased VERP address (MTAs fold case).
            for rcpt in (verp_address(12345), verp_address(7).upper(), FBL, FBL.upper()):
                await smtp.mail("")
                assert (await smtp.rcpt(rcpt)).code == 250, rcpt
                await smtp.rset()
            # A valid recipient does not open the door for others in the same transaction.
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await smtp.sendmail("", ["victim@example.org"], MESSAGE)
            errors, _ = await smtp.sendmail("", [verp_address(99), "victim@example.org"], MESSAGE)
            assert "victim@example.org" in errors and verp_address(99) not in errors
        finally:
            await smtp.quit()
        rows = await pool.fetch("SELECT rcpt_to FROM content.inbound_messages")
        assert [r["rcpt_to"] for r in rows] == [[verp_address(99)]], "only the VERP copy stored"


async def test_raw_nul_and_oversize_rcpt_lines_are_refused(
    pool: asyncpg.Pool, listener_cfg: Config
) -> None:
    """The NUL forgery and a 10 kB address, sent as raw bytes (aiosmtplib would refuse them)."""
    good = verp_address(5)
    async with running_listener(listener_cfg, pool) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            assert (await read_reply(reader))[0] == 220
            for line in (
                b"EHLO x\r\n",
                b"MAIL FROM:<>\r\n",
                b"RCPT TO:<" + good.encode().replace(b"-", b"\x00-", 1) + b">\r\n",
                b"RCPT TO:<" + b"a" * 10_000 + b"@" + VERP_DOMAIN.encode() + b">\r\n",
                b"RCPT TO:<" + good.encode() + b"> NOTIFY=NEVER\x00\r\n",
            ):
                writer.write(line)
                await writer.drain()
                code, text = await read_reply(reader)
                if line.startswith(b"RCPT"):
                    assert code >= 500, f"{line[:60]!r} -> {text}"
        finally:
            writer.close()


async def test_per_ip_connection_limit(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    cfg = listener_config(clean_db, redis_prefix, max_connections_per_ip=3)
    async with running_listener(cfg, pool) as service:
        opened = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            assert (await read_reply(reader))[0] == 220
            opened.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        code, text = await read_reply(reader)
        assert code == 421, text
        assert await asyncio.wait_for(reader.read(), 5) == b"", "the 4th connection is closed"
        writer.close()
        # One closes: a new connection is welcome again (the count is per open connection).
        opened[0][1].write(b"QUIT\r\n")
        await opened[0][1].drain()
        assert (await read_reply(opened[0][0]))[0] == 221
        opened[0][1].close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        assert (await read_reply(reader))[0] == 220
        writer.close()
        for _, w in opened[1:]:
            w.close()


async def test_per_ip_message_rate_limit(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    cfg = listener_config(clean_db, redis_prefix, max_messages_per_minute_per_ip=5)
    async with running_listener(cfg, pool) as service:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        try:
            for i in range(5):
                await smtp.sendmail("", [verp_address(i + 1)], MESSAGE)
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.sendmail("", [verp_address(6)], MESSAGE)
            assert refused.value.code == 421
        finally:
            smtp.close()
        assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 5


async def test_oversize_message_is_refused_and_not_stored(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """A 50 MB "bounce" against the size limit: refused with 552, memory not spent storing it."""
    cfg = listener_config(clean_db, redis_prefix, max_message_bytes=1 << 20)
    big = b"Subject: bomb\r\n\r\n" + (b"A" * 998 + b"\r\n") * (50 << 10)
    async with running_listener(cfg, pool) as service:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=60)
        await smtp.connect()
        try:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await smtp.sendmail("", [verp_address(1)], big)
            assert refused.value.code == 552
        finally:
            smtp.close()
        assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 0
