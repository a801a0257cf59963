"""BDAT (RFC 3030 CHUNKING) transactions: MAIL, RCPTs and ``BDAT <size> LAST`` + the message in
one write, against ``PipeServer(chunking=True)`` and the sink.

The payload goes out before any reply is read, so the rule for a broken stream differs from the
DATA path: only a refusal of MAIL or of every recipient proves that nothing was delivered; any
other missing reply means the node may have queued the message (DEFERRED, not sent elsewhere).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.config import RelayConfig, RelayNode
from engine.model import OutcomeKind
from engine.relay import RelayPool
from engine.relay.node import NodePool, prepare_payload
from engine.sink import SmtpSink
from tests.integration.test_relay_pipeline import A_FIRST, PipeServer, cfg_for, msg, pool_for

pytestmark = pytest.mark.timeout(60)
__all__ = ["pool_for"]  # the fixture, imported for this module's tests


@pytest.fixture
async def server() -> AsyncIterator[PipeServer]:
    async with PipeServer(chunking=True) as s:
        yield s


@pytest.fixture
async def spare() -> AsyncIterator[PipeServer]:
    async with PipeServer(chunking=True) as s:
        yield s


def two(server: PipeServer, spare: PipeServer, **kw: Any) -> RelayConfig:
    return cfg_for(server.node("a"), spare.node("b"), breaker_failures=100, **kw)


def test_payload_is_the_message_for_bdat_and_stuffed_for_data() -> None:
    plain = prepare_payload(b"Subject: s\n\nno dots here\n")
    assert plain.body == b"Subject: s\r\n\r\nno dots here\r\n"
    assert plain.data == plain.body + b".\r\n"
    assert plain.size == len(plain.body)
    dotted = prepare_payload(b".first\r\nx\r\n.second\r\n")
    assert dotted.body == b".first\r\nx\r\n.second\r\n"
    assert dotted.data == b"..first\r\nx\r\n..second\r\n.\r\n"
    assert dotted.size == len(dotted.body)


async def test_one_write_per_message_and_the_message_as_is(
    server: PipeServer, pool_for: Any
) -> None:
    pool = await pool_for(cfg_for(server.node()))
    rcpts = [f"r{i}@example.test" for i in range(3)]
    for i in range(4):
        result = await pool.send("a@sender.test", rcpts, msg(i))
        assert (result.kind, result.reply_code) == (OutcomeKind.RELAYED, 250)
    assert server.pipelined == 4  # the BDAT (and its chunk) came with MAIL
    assert server.messages == [msg(i) for i in range(4)]  # ".leading dot" not stuffed
    assert server.connections == 1


async def test_a_refused_recipient_is_listed(server: PipeServer, pool_for: Any) -> None:
    server.rcpt = {"bad": b"550 5.1.1 no such user"}
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["ok@x.test", "bad@x.test"], msg(1))
    assert result.kind is OutcomeKind.RELAYED
    assert [(r.recipient, r.reply_code, r.enhanced_status) for r in result.refused] == [
        ("bad@x.test", 550, "5.1.1")
    ]
    assert server.messages == [msg(1)]


async def test_every_recipient_refused_delivers_nothing(server: PipeServer, pool_for: Any) -> None:
    server.rcpt = {"bad": b"550 5.1.1 no such user", "later": b"450 4.2.1 try later"}
    pool = await pool_for(cfg_for(server.node()))
    failed = await pool.send("a@sender.test", ["bad1@x.test", "bad2@x.test"], msg(1))
    assert (failed.kind, failed.reply_code, len(failed.refused)) == (OutcomeKind.FAILED, 550, 2)
    deferred = await pool.send("a@sender.test", ["bad@x.test", "later@x.test"], msg(2))
    assert (deferred.kind, deferred.reply_code) == (OutcomeKind.DEFERRED, 450)
    ok = await pool.send("a@sender.test", ["ok@x.test"], msg(3))
    assert ok.kind is OutcomeKind.RELAYED
    assert server.messages == [msg(3)]
    assert server.connections == 1  # the 554 to the BDAT was read, the session reset and reused


@pytest.mark.parametrize(
    ("verb", "reply", "kind"),
    [
        ("MAIL", b"451 4.3.0 try again later", OutcomeKind.DEFERRED),
        ("MAIL", b"553 5.1.8 bad sender domain", OutcomeKind.FAILED),
        ("END", b"452 4.3.1 insufficient storage", OutcomeKind.DEFERRED),
        ("END", b"554-5.7.1 rejected\r\n554 5.7.1 as spam", OutcomeKind.FAILED),
    ],
)
async def test_refusals(
    server: PipeServer, pool_for: Any, verb: str, reply: bytes, kind: OutcomeKind
) -> None:
    server.reply[verb] = reply
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1))
    assert (result.kind, result.nodes_tried) == (kind, 1)
    del server.reply[verb]
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(2))).kind is OutcomeKind.RELAYED
    assert server.messages == [msg(2)]
    assert server.connections == 1


async def test_421_at_rcpt_settles_it_even_as_the_node_hangs_up(
    server: PipeServer, pool_for: Any
) -> None:
    server.rcpt = {"b": b"421 4.7.0 too many connections"}  # PipeServer closes after a 421
    server.on = 1
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["b@x.test", "c@x.test"], msg(1))
    assert (result.kind, result.reply_code, result.nodes_tried) == (OutcomeKind.DEFERRED, 421, 1)
    assert [r.recipient for r in result.refused] == ["b@x.test", "c@x.test"]
    assert "may have it" not in (result.reply or "")
    assert (await pool.send("a@sender.test", ["c@x.test"], msg(2))).kind is OutcomeKind.RELAYED
    assert server.connections == 2


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "BDAT", "END"])
async def test_drop_after_the_write_is_deferred_not_resent(
    server: PipeServer, spare: PipeServer, pool_for: Any, verb: str
) -> None:
    # Whatever the node had read when it hung up, the message went out with the commands: it
    # may be queued (Postfix flushes the replies only after the last chunk), so no failover.
    server.drop = verb
    pool = await pool_for(two(server, spare))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.reply_code, result.node) == (OutcomeKind.DEFERRED, None, "a")
    assert "may have it" in result.reply
    assert spare.messages == []
    assert spare.connections == 0


@pytest.mark.parametrize("verb", ["MAIL", "END"])
async def test_timeout_after_the_write_is_deferred(
    server: PipeServer, spare: PipeServer, pool_for: Any, verb: str
) -> None:
    server.hang = verb
    pool = await pool_for(two(server, spare, command_timeout_s=0.3))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.reply_code, result.node) == (OutcomeKind.DEFERRED, None, "a")
    assert "within 0.3 s" in result.reply
    assert spare.messages == []


async def test_a_mail_refusal_before_a_hang_up_is_still_a_refusal(
    server: PipeServer, spare: PipeServer, pool_for: Any
) -> None:
    server.reply["MAIL"] = b"550 5.7.1 sender blocked"
    server.drop = "RCPT"  # the node answers MAIL, then hangs up
    pool = await pool_for(two(server, spare))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.reply_code, result.node) == (OutcomeKind.FAILED, 550, "a")


async def test_a_session_the_node_closed_while_idle_is_replaced(
    server: PipeServer, pool_for: Any
) -> None:
    pool = await pool_for(cfg_for(server.node()))
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(1))).kind is OutcomeKind.RELAYED
    server.hang_up()  # the node's idle timeout; its FIN arrives before the next send
    await asyncio.sleep(0.1)
    result = await pool.send("a@sender.test", ["r@x.test"], msg(2))
    assert (result.kind, result.nodes_tried) == (OutcomeKind.RELAYED, 1)
    assert server.connections == 2
    assert pool.snapshot()[0].failures == 0


async def test_chunking_can_be_switched_off(
    server: PipeServer, pool_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NodePool, "chunking", False)
    pool = await pool_for(cfg_for(server.node()))
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(1))).kind is OutcomeKind.RELAYED
    assert server.chunks == []
    assert server.messages == [msg(1)]  # by DATA, un-stuffed by the server


async def test_500_concurrent_messages_to_the_sink_once_each(pool_for: Any) -> None:
    async with SmtpSink(rcpt_rules={b"bad": b"550 5.1.1 no such user"}) as sink:
        node = RelayNode(name="s", host="127.0.0.1", port=sink.port, tls="none", max_connections=8)
        pool: RelayPool = await pool_for(cfg_for(node))
        results = await asyncio.gather(
            *(
                pool.send("a@sender.test", ["bad@x.test"] if i % 50 == 0 else ["r@x.test"], msg(i))
                for i in range(500)
            )
        )
        assert Counter(r.kind for r in results) == {
            OutcomeKind.RELAYED: 490,
            OutcomeKind.FAILED: 10,
        }
    assert len(sink.stats.message_ids) == 490
    assert sink.stats.duplicates == 0
