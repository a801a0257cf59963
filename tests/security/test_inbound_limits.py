"""Listener limits over real SMTP: bounded parse queue (421, nothing lost), global connection cap,
per-IP hourly message and byte quotas (the service's clock injected)."""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib
import asyncpg
import pytest

from engine import metrics
from tests.integration.test_inbound import dsn
from tests.integration.test_inbound_quarantine import _job, _until
from tests.security.listener import (
    FBL,
    listener_config,
    read_reply,
    running_listener,
    verp_address,
)

MESSAGE = b"From: x@isp.example\r\nSubject: hi\r\n\r\nhello\r\n"


def _refused(cause: str) -> float:
    value = metrics.REGISTRY.get_sample_value("engine_inbound_refused_total", {"cause": cause})
    return value or 0.0


async def test_full_queue_answers_421_and_loses_nothing(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    cfg = listener_config(clean_db, redis_prefix, queue_max=2)
    jobs = [await _job(pool, f"gone{i}@example.com") for i in range(3)]
    before = _refused("queue_full")
    # run=False: nothing drains the queue until the test starts the effects loop itself.
    async with running_listener(cfg, pool, run=False) as service:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        for i, (job_id, mid) in enumerate(jobs[:2]):
            await smtp.sendmail("", [verp_address(job_id)], dsn(f"gone{i}@example.com", mid))
        job_id, mid = jobs[2]
        third = dsn("gone2@example.com", mid)
        with pytest.raises(aiosmtplib.SMTPDataError) as full:
            await smtp.sendmail("", [verp_address(job_id)], third)
        assert full.value.code == 421 and "4.3.2" in full.value.message
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        assert _refused("queue_full") == before + 1
        assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 2
        # Unsubscribe-only mail and refusals at RCPT do not need a place in the queue.
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await smtp.sendmail("", ["victim@example.org"], MESSAGE)
        stop = asyncio.Event()
        effects = asyncio.create_task(service.run(stop))
        try:
            await _until(pool, "SELECT count(*) = 2 FROM queue.jobs WHERE state = 'bounced'")
            while service.intake.depth:
                await asyncio.sleep(0.01)
            # the sender's retry (aiosmtplib, as MTAs do, hung up after the 421)
            await smtp.quit()
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
            await smtp.connect()
            await smtp.sendmail("", [verp_address(job_id)], third)
            await _until(pool, "SELECT count(*) = 3 FROM queue.jobs WHERE state = 'bounced'")
            assert service.intake.depth == 0
        finally:
            stop.set()
            await asyncio.wait_for(effects, 10)
            await smtp.quit()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM content.inbound_messages WHERE processed_at IS NOT NULL"
        )
        == 3
    )


async def test_global_connection_cap(clean_db: str, redis_prefix: str, pool: asyncpg.Pool) -> None:
    cfg = listener_config(clean_db, redis_prefix, max_connections=3, max_connections_per_ip=50)
    before = _refused("connections")
    async with running_listener(cfg, pool) as service:
        opened = []
        try:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
                assert (await read_reply(reader))[0] == 220
                opened.append((reader, writer))
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            code, text = await read_reply(reader)
            assert code == 421 and "Too many connections" in text, text
            assert await asyncio.wait_for(reader.read(), 5) == b"", "closed after the 421"
            writer.close()
            assert _refused("connections") == before + 1
            opened.pop()[1].close()
            await asyncio.sleep(0.2)
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            assert (await read_reply(reader))[0] == 220
            opened.append((reader, writer))
        finally:
            for _, w in opened:
                w.close()


async def test_hourly_quotas_per_ip(clean_db: str, redis_prefix: str, pool: asyncpg.Pool) -> None:
    now = [1_000_000.0]
    cfg = listener_config(
        clean_db,
        redis_prefix,
        max_messages_per_hour_per_ip=3,
        max_bytes_per_hour_per_ip=2_000,
    )
    async with running_listener(cfg, pool) as service:
        service.limits.clock = lambda: now[0]
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=10)
        await smtp.connect()
        try:
            await smtp.sendmail("", [FBL], MESSAGE + b"x" * 900)
            # declared SIZE over what is left of the hour: refused at MAIL (and not counted)
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as declared:
                await smtp.sendmail("", [FBL], MESSAGE + b"x" * 1500)
            assert declared.value.code == 421 and "byte quota" in declared.value.message
            await smtp.connect()  # aiosmtplib hangs up after a 421, as MTAs do
            # undeclared: refused at DATA, not stored
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
            try:
                assert (await read_reply(reader))[0] == 220
                rcpt = f"RCPT TO:<{FBL}>\r\n".encode()
                for line in (b"EHLO x\r\n", b"MAIL FROM:<>\r\n", rcpt):
                    writer.write(line)
                    assert (await read_reply(reader))[0] == 250
                writer.write(b"DATA\r\n")
                assert (await read_reply(reader))[0] == 354
                writer.write(MESSAGE + (b"x" * 98 + b"\r\n") * 15 + b".\r\n")
                code, text = await read_reply(reader)
                assert code == 421 and "byte quota" in text, text
            finally:
                writer.close()
                await writer.wait_closed()
            await smtp.sendmail("", [FBL], MESSAGE)
            # three MAILs counted (the one refused at DATA too): the fourth is over the quota
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as many:
                await smtp.sendmail("", [FBL], MESSAGE)
            assert many.value.code == 421 and "message quota" in many.value.message
            await smtp.connect()
            now[0] += 2 * 3600  # two hours later the address is welcome again
            await smtp.sendmail("", [FBL], MESSAGE)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await smtp.quit()
    assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 3


async def test_commands_pipelined_after_the_data_are_answered(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    """The DATA phase reads in chunks: what comes after the end marker is not lost."""
    cfg = listener_config(clean_db, redis_prefix)
    async with running_listener(cfg, pool) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        try:
            assert (await read_reply(reader))[0] == 220
            writer.write(f"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<{FBL}>\r\nDATA\r\n".encode())
            codes = [(await read_reply(reader))[0] for _ in range(4)]
            assert codes == [250, 250, 250, 354]
            second = f"MAIL FROM:<>\r\nRCPT TO:<{FBL}>\r\nDATA\r\n".encode()
            writer.write(b"Subject: one\r\n\r\n..dot\r\n.\r\n" + second)
            codes = [(await read_reply(reader))[0] for _ in range(4)]
            assert codes == [250, 250, 250, 354]
            writer.write(b"Subject: two\r\n\r\nx\r\n.\r\nQUIT\r\n")
            assert [(await read_reply(reader))[0] for _ in range(2)] == [250, 221]
        finally:
            writer.close()
            await writer.wait_closed()
    raws = await pool.fetch("SELECT size FROM content.inbound_messages ORDER BY id")
    assert [r["size"] for r in raws] == [
        len(b"Subject: one\r\n\r\n.dot\r\n"),
        len(b"Subject: two\r\n\r\nx\r\n"),
    ]
