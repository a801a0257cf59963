"""The relay's DSN parameters on a real Postfix node (RFC 3461), on both transaction paths.

What Postfix echoes in its notices is the proof the parameters went out as meant: the ENVID,
the ORCPT, NOTIFY (a success notice only when asked) and RET=HDRS (no body quoted).
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from engine.model import OutcomeKind
from engine.relay import RelayPool
from engine.relay.dsn import DsnRequest
from engine.relay.node import NodePool
from tests.fakes.mailu import FakeMailU
from tests.fakes.postfix import PostfixNode, Provider
from tests.integration.test_relay_pool import relay_cfg

pytestmark = pytest.mark.timeout(90)

VERP = "b-7-abcdefghij@bounces.localhost"
BODY_MARK = "body-line-that-RET-HDRS-must-not-return"


def message(rcpt: str) -> bytes:
    return (
        f"From: news@sender.test\r\nTo: {rcpt}\r\nSubject: dsn\r\n"
        f"Message-ID: <dsn-{rcpt}@sender.test>\r\n\r\n{BODY_MARK}\r\n"
    ).encode()


@pytest.fixture
def dsn_sink(postfix_node: PostfixNode) -> Iterator[FakeMailU]:
    with FakeMailU() as sink:
        postfix_node.route("bounces.localhost", sink.port)
        yield sink


@pytest.fixture
async def relay(postfix_node: PostfixNode) -> AsyncIterator[RelayPool]:
    # A fresh Postfix starts cleanup, trivial-rewrite and qmgr on its first message: on a loaded
    # host its first end-of-DATA reply can take seconds, and a 2 s command timeout would defer
    # the message ("the node may have it") instead of testing the DSN parameters.
    pool = RelayPool(relay_cfg(postfix_node.relay_node("pf"), command_timeout_s=30.0))
    await pool.start(health_checks=False)
    yield pool
    await pool.close()


def notices(sink: FakeMailU) -> list[dict[str, Any]]:
    """Each notice: its per-message and per-recipient delivery-status fields and the raw text."""
    out = []
    for m in sink.received:
        msg = email.message_from_bytes(m.data)
        for part in msg.walk():
            if part.get_content_type() == "message/delivery-status":
                blocks = part.get_payload()
                assert isinstance(blocks, list)
                out.append(
                    {
                        "envid": blocks[0].get("Original-Envelope-Id"),
                        "action": str(blocks[1].get("Action")).lower(),
                        "orcpt": blocks[1].get("Original-Recipient"),
                        "raw": m.data.decode("utf-8", "replace"),
                    }
                )
    return out


async def wait_notices(sink: FakeMailU, n: int, pf: PostfixNode, timeout: float = 20) -> None:
    if not await sink.wait_for_async(n, timeout=timeout):
        raise AssertionError(f"{sink.count()} notices of {n}; postfix log:\n{pf.log()[-3000:]}")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "step-by-step"])
async def test_failure_and_success_notices_carry_our_parameters(
    postfix_node: PostfixNode,
    providers: dict[str, Provider],
    dsn_sink: FakeMailU,
    relay: RelayPool,
    pipelining: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(NodePool, "pipelining", pipelining)
    providers["gmail.test"].fail_rcpt("^gone@", 550, "5.1.1 no such user")
    failing = await relay.send(
        VERP, "gone@gmail.test", message("gone@gmail.test"), dsn=DsnRequest(envid="e-7-abc")
    )
    sampled = await relay.send(
        VERP,
        "ok+x@outlook.test",
        message("ok+x@outlook.test"),
        dsn=DsnRequest(envid="e-8-abc", success=True),
    )
    quiet = await relay.send(
        VERP, "quiet@yahoo.test", message("quiet@yahoo.test"), dsn=DsnRequest(envid="e-9-abc")
    )
    # Postfix accepts all three: what the provider says comes back later, as notices.
    assert [r.kind for r in (failing, sampled, quiet)] == [OutcomeKind.RELAYED] * 3
    await wait_notices(dsn_sink, 2, postfix_node)
    await asyncio.sleep(0.5)  # a third notice (for the unsampled success) would have come by now
    found = {n["envid"]: n for n in notices(dsn_sink)}
    assert set(found) == {"e-7-abc", "e-8-abc"}
    assert found["e-7-abc"]["action"] == "failed"
    assert found["e-7-abc"]["orcpt"] == "rfc822;gone@gmail.test"
    assert "550 5.1.1 no such user" in found["e-7-abc"]["raw"]
    assert BODY_MARK not in found["e-7-abc"]["raw"]  # RET=HDRS
    assert found["e-8-abc"]["action"] == "relayed"  # the provider offers no DSN
    assert found["e-8-abc"]["orcpt"] == "rfc822;ok+x@outlook.test"  # xtext decoded by Postfix
    assert providers["yahoo.test"].count() == 1 and providers["outlook.test"].count() == 1


async def test_node_without_dsn_gets_no_parameters(mailu: FakeMailU) -> None:
    """aiosmtpd refuses RCPT parameters it was not told about (555): the send succeeding shows
    that nothing was sent to a node that does not offer DSN."""
    pool = RelayPool(relay_cfg(mailu.relay_node("plain")))
    await pool.start(health_checks=False)
    try:
        for pipelining in (True, False):
            NodePool.pipelining = pipelining
            try:
                result = await pool.send(
                    VERP,
                    "a@gmail.test",
                    message("a@gmail.test"),
                    dsn=DsnRequest(envid="e-1-x", success=True),
                )
            finally:
                NodePool.pipelining = True
            assert result.kind is OutcomeKind.RELAYED, result.reply
    finally:
        await pool.close()
    assert mailu.count() == 2
