"""The inbound listener over real SMTP, fed garbage: it never dies and keeps serving.

Hundreds of sessions (seeded, so a failure replays) send random bytes, overlong lines, NULs,
8-bit commands, commands out of order, pipelined floods, AUTH/STARTTLS it does not offer, DATA
bodies with bare CR/LF and lone dots, and hang up at random points. After every batch a fresh
client must still get a greeting and be able to deliver a real bounce, which is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiosmtplib
import asyncpg

from tests.security.listener import FBL, listener_config, read_reply, running_listener

SESSIONS = 300
CONCURRENCY = 10
COMMANDS = [
    b"EHLO x",
    b"HELO \xff\xfe",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@b> SIZE=99999999999999999999",
    b"MAIL FROM:<\x00@x>",
    b"RCPT TO:<" + FBL.encode() + b">",
    b"RCPT TO:<victim@example.org>",
    b"RCPT TO:<" + FBL.encode() + b"> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x",
    b"DATA",
    b"BDAT 10 LAST",
    b"AUTH PLAIN AGFhAGJi",
    b"AUTH LOGIN",
    b"STARTTLS",
    b"RSET",
    b"NOOP " + b"x" * 600,
    b"VRFY root",
    b"EXPN staff",
    b"HELP",
    b"ETRN x",
    b"XCLIENT ADDR=1.2.3.4",
    b"\x00\x00\x00",
    b"",
    b".",
    b"MAIL",
    b"RCPT TO:",
    b"EHLO " + b"a" * 5000,
]


def _session(rng: random.Random) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        roll = rng.random()
        if roll < 0.5:
            out.append(rng.choice(COMMANDS) + rng.choice([b"\r\n", b"\n", b"\r", b""]))
        elif roll < 0.7:
            out.append(rng.randbytes(rng.randint(0, 300)))
        elif roll < 0.8:
            out.append(b"X" * rng.randint(1000, 70000) + b"\r\n")  # overlong line
        elif roll < 0.9:  # a whole transaction with a hostile body
            body = rng.choice([b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"..\r\n", b"\x00" * 50])
            out.append(
                b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<" + FBL.encode() + b">\r\nDATA\r\n"
                b"Subject: x\r\n\r\n" + body + rng.randbytes(rng.randint(0, 200)) + b"\r\n.\r\n"
            )
        else:
            out.append(b"NOOP\r\n" * rng.randint(10, 500))  # pipelined flood
    return out


async def _garbage(port: int, rng: random.Random) -> None:
    with contextlib.suppress(OSError, TimeoutError, ConnectionError):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:
            for chunk in _session(rng):
                writer.write(chunk)
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(65536), 0.05)
                if rng.random() < 0.1:
                    return  # hang up mid-conversation
        finally:
            writer.close()


async def _still_serving(port: int) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        assert (await read_reply(reader))[0] == 220
        writer.write(b"EHLO check\r\n")
        await writer.drain()
        assert (await read_reply(reader))[0] == 250
    finally:
        writer.close()


async def test_garbage_never_kills_the_listener(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    cfg = listener_config(
        clean_db, redis_prefix, max_connections_per_ip=50, max_messages_per_minute_per_ip=100_000
    )
    rng = random.Random(20240601)
    async with running_listener(cfg, pool) as service:
        assert service.port is not None
        for start in range(0, SESSIONS, CONCURRENCY):
            seeds = [rng.random() for _ in range(CONCURRENCY)]
            await asyncio.gather(
                *(_garbage(service.port, random.Random(s)) for s in seeds[: SESSIONS - start])
            )
            await _still_serving(service.port)
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        await smtp.sendmail("isp@example.net", [FBL], b"Subject: real report\r\n\r\nhello\r\n")
        await smtp.quit()
    stored = await pool.fetchval(
        "SELECT count(*) FROM content.inbound_messages WHERE rcpt_to = ARRAY[$1]", FBL
    )
    assert stored >= 1, "the real report after the garbage was stored"
