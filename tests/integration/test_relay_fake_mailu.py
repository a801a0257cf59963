"""The fake MailU node itself: what other packages' tests rely on."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiosmtplib
import pytest

from tests.fakes.fixtures import MAILU_PASSWORD, MAILU_USER, mailu, mailu_tls  # noqa: F401
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.timeout(30)


def msg(mid: str) -> bytes:
    return f"Message-ID: {mid}\r\nSubject: t\r\n\r\nbody\r\n".encode()


async def client(node: FakeMailU, **kw: Any) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
        hostname=node.host, port=node.port, local_hostname="t.test", start_tls=False, **kw
    )
    await smtp.connect()
    return smtp


async def bye(smtp: aiosmtplib.SMTP) -> None:
    """QUIT and wait until the socket is really closed (a TLS close takes a few loop turns)."""
    proto = smtp.protocol
    if smtp.is_connected:
        await smtp.quit()
    smtp.close()
    for _ in range(200):
        if proto is None or proto.transport is None:
            return
        await asyncio.sleep(0.005)


async def test_records_and_counts_duplicates(mailu: FakeMailU) -> None:
    smtp = await client(mailu)
    for mid in ("<a@x>", "<b@x>", "<a@x>"):
        await smtp.sendmail("f@x.test", ["r@x.test"], msg(mid))
    await bye(smtp)
    assert mailu.count() == 3
    assert mailu.message_ids() == ["<a@x>", "<b@x>", "<a@x>"]
    assert mailu.duplicates() == {"<a@x>": 2}
    assert mailu.wait_for(3, timeout=0.1)
    assert not mailu.wait_for(4, timeout=0.05)
    assert await mailu.wait_for_async(3, timeout=0.1)


async def test_injected_reply_counts_down(mailu: FakeMailU) -> None:
    mailu.set_reply("RCPT", 450, "4.2.1 slow down", times=2)
    smtp = await client(mailu)
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await smtp.sendmail("f@x.test", ["r@x.test"], msg("<c@x>"))
    await smtp.sendmail("f@x.test", ["r@x.test"], msg("<c@x>"))
    await bye(smtp)
    assert mailu.count() == 1


async def test_auth_is_required_when_configured(mailu_tls: FakeMailU) -> None:
    ctx = mailu_tls.client_ssl_context()
    anon = aiosmtplib.SMTP(
        hostname=mailu_tls.host, port=mailu_tls.port, local_hostname="t.test", tls_context=ctx
    )
    await anon.connect()
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await anon.sendmail("f@x.test", ["r@x.test"], msg("<d@x>"))
    assert refused.value.code == 530
    await bye(anon)
    authed = aiosmtplib.SMTP(
        hostname=mailu_tls.host,
        port=mailu_tls.port,
        local_hostname="t.test",
        tls_context=ctx,
        username=MAILU_USER,
        password=MAILU_PASSWORD,
    )
    await authed.connect()
    await authed.sendmail("f@x.test", ["r@x.test"], msg("<d@x>"))
    await bye(authed)
    assert mailu_tls.received[0].authenticated_as == MAILU_USER


async def test_stop_refuses_and_start_comes_back_on_the_same_port(mailu: FakeMailU) -> None:
    port = mailu.port
    mailu.stop()
    assert not mailu.running
    with pytest.raises(ConnectionRefusedError), socket.create_connection((mailu.host, port), 1):
        pass
    mailu.start()
    assert mailu.port == port
    smtp = await client(mailu)
    await smtp.sendmail("f@x.test", ["r@x.test"], msg("<e@x>"))
    await bye(smtp)
    assert mailu.count() == 1


async def test_drop_after_data_hangs_up_without_reply(mailu: FakeMailU) -> None:
    mailu.drop_after_data(n=1)
    smtp = await client(mailu)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await smtp.sendmail("f@x.test", ["r@x.test"], msg("<f@x>"))
    await bye(smtp)
    assert mailu.count() == 0
    smtp = await client(mailu)
    await smtp.sendmail("f@x.test", ["r@x.test"], msg("<f@x>"))
    await bye(smtp)
    assert mailu.message_ids() == ["<f@x>"]


async def test_delay_slows_replies(mailu: FakeMailU) -> None:
    mailu.set_delay("DATA", 0.3)
    smtp = await client(mailu, timeout=0.1)
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await smtp.sendmail("f@x.test", ["r@x.test"], msg("<g@x>"))
    await bye(smtp)
    mailu.reset_faults()
    assert mailu.delay_s == 0
