"""The pipelined relay transaction (RFC 2920) against servers that offer PIPELINING.

``SmtpSink`` (the fast sink) and ``PipeServer`` below (a small pipelining server with fault
injection) offer PIPELINING; the fake MailU (aiosmtpd) does not, so it gets the command-by-command
path. What a sender sees must be the same on both paths. ``PipeServer(chunking=True)`` also offers
CHUNKING: its BDAT transactions are tested in test_relay_bdat.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
import uvloop

from engine.config import RelayConfig, RelayNode
from engine.model import OutcomeKind
from engine.relay import RelayPool
from engine.relay.node import NodePool
from engine.relay.select import rendezvous_order
from engine.sink import SmtpSink
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.timeout(60)

WEIGHTS = [("a", 1), ("b", 1)]

EHLO = b"250-pipe\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"


class PipeServer:
    """A pipelining SMTP server on 127.0.0.1 with faults to inject.

    ``reply[verb]``: a reply line instead of the normal one (``"RCPT"`` only for recipients whose
    local part starts with a key of ``rcpt``). ``drop``: close the connection instead of answering
    ``verb`` (``"END"``: after reading the payload, with no reply); ``hang``: never answer it.
    Faults apply to transaction number ``on`` of each connection (1-based; 0: every one).
    With ``chunking`` it offers CHUNKING (RFC 3030) and takes ``BDAT <size> [LAST]``: ``"BDAT"``
    faults strike before the chunk is read, ``"END"`` faults after it.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None, chunking: bool = False) -> None:
        self.tls = tls
        self.chunking = chunking
        self.chunks: list[bytes] = []  # BDAT chunks of the transaction being received
        self.writers: list[asyncio.StreamWriter] = []  # open connections
        self.mail_ok = False  # the last MAIL was accepted (RCPTs after a refused one get a 503)
        self.reply: dict[str, bytes] = {}
        self.rcpt: dict[str, bytes] = {}
        self.drop: str | None = None
        self.hang: str | None = None
        self.on = 0
        self.data_without_rcpt = b"554 5.5.1 no valid recipients"
        self.messages: list[bytes] = []
        self.commands: list[bytes] = []  # MAIL and RCPT lines as received
        self.connections = 0
        self.pipelined = 0  # MAIL commands that arrived with the rest of the group
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> PipeServer:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def node(self, name: str = "pipe", **kw: Any) -> RelayNode:
        if self.tls is None:
            return RelayNode(name=name, host="127.0.0.1", port=self.port, tls="none", **kw)
        return RelayNode(name=name, host="127.0.0.1", port=self.port, tls="implicit", **kw)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(b"220 pipe ESMTP\r\n")
        txn, accepted = 0, 0
        try:
            while line := await reader.readline():
                verb = line[:4].decode().upper()
                if verb in ("MAIL", "RCPT"):
                    self.commands.append(line)
                if verb == "MAIL":
                    txn, accepted = txn + 1, 0
                    buffered = reader._buffer  # type: ignore[attr-defined]
                    self.pipelined += b"DATA\r\n" in buffered or b"BDAT " in buffered
                faulty = self.on in (0, txn)
                if faulty and self.drop == verb:
                    break
                if faulty and self.hang == verb:
                    await asyncio.sleep(3600)
                if verb == "BDAT":
                    reply = await self._bdat(reader, line, accepted, faulty)
                    if reply is None:
                        break
                    accepted = 0 if b"LAST" in line.upper() else accepted
                    writer.write(reply + b"\r\n")
                    await writer.drain()
                    continue
                reply = self._answer(verb, line, accepted)
                accepted += verb == "RCPT" and reply.startswith(b"25")
                if verb == "DATA" and reply.startswith(b"354"):
                    writer.write(reply + b"\r\n")
                    final = await self._data(reader, accepted, faulty)
                    if final is None:
                        break
                    reply = final
                writer.write(reply + b"\r\n")
                if reply.startswith((b"221", b"421")):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.writers.remove(writer)

    def hang_up(self) -> None:
        """Close every open connection (the node's idle timeout)."""
        for writer in self.writers:
            writer.close()

    async def _data(
        self, reader: asyncio.StreamReader, accepted: int, faulty: bool
    ) -> bytes | None:
        """Read a DATA payload and answer it; None: drop the connection (an ``"END"`` fault)."""
        body = await self._payload(reader)
        if faulty and self.drop == "END":
            return None
        if faulty and self.hang == "END":
            await asyncio.sleep(3600)
        if accepted:
            self.messages.append(body)
        return self.reply.get("END", b"250 2.0.0 queued" if accepted else b"554 no")

    async def _bdat(
        self, reader: asyncio.StreamReader, line: bytes, accepted: int, faulty: bool
    ) -> bytes | None:
        """Read one chunk and answer it; None: drop the connection (an ``"END"`` fault)."""
        size = int(line.split()[1])
        chunk = await reader.readexactly(size)  # RFC 3030: read even when the command fails
        if faulty and self.drop == "END":
            return None
        if faulty and self.hang == "END":
            await asyncio.sleep(3600)
        if not accepted:
            self.chunks.clear()
            return self.data_without_rcpt
        self.chunks.append(chunk)
        if b"LAST" not in line.upper():
            return b"250 2.0.0 chunk ok"
        message = b"".join(self.chunks)
        self.chunks.clear()
        if "END" in self.reply:  # refused: not delivered
            return self.reply["END"]
        self.messages.append(message)
        return b"250 2.0.0 queued"

    def _answer(self, verb: str, line: bytes, accepted: int) -> bytes:
        if verb in ("EHLO", "HELO"):
            if self.chunking:
                return EHLO.replace(b"250 SIZE", b"250-CHUNKING\r\n250 SIZE").rstrip(b"\r\n")
            return EHLO.rstrip(b"\r\n")
        if verb == "QUIT":
            return b"221 bye"
        if verb == "RSET":
            self.chunks.clear()
        if verb == "RCPT" and not self.mail_ok:
            return b"503 5.5.1 Error: need MAIL command"
        if verb == "RCPT":
            local = line.split(b"<", 1)[1].split(b"@", 1)[0].decode()
            for prefix, reply in self.rcpt.items():
                if local.startswith(prefix):
                    return reply
        if verb == "DATA" and not accepted and "DATA" not in self.reply:
            return self.data_without_rcpt
        default = b"354 go ahead" if verb == "DATA" else b"250 2.0.0 ok"
        reply = self.reply.get(verb, default)
        if verb == "MAIL":
            self.mail_ok = reply.startswith(b"250")
        return reply

    @staticmethod
    async def _payload(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while (line := await reader.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b".") else line)  # RFC 5321 §4.5.2
        return b"".join(lines)


def cfg_for(*nodes: RelayNode, **kw: Any) -> RelayConfig:
    fields: dict[str, Any] = {
        "nodes": list(nodes),
        "helo_name": "engine.test",
        "connect_timeout_s": 2.0,
        "command_timeout_s": 2.0,
    }
    fields.update(kw)
    return RelayConfig(**fields)


def msg(i: int) -> bytes:
    return (
        f"From: a@sender.test\r\nMessage-ID: <m{i}@sender.test>\r\nSubject: {i}\r\n\r\n"
        f"body {i}\r\n.leading dot\r\n"
    ).encode()


@pytest.fixture
async def server() -> AsyncIterator[PipeServer]:
    async with PipeServer() as s:
        yield s


@pytest.fixture
async def spare() -> AsyncIterator[PipeServer]:
    async with PipeServer() as s:
        yield s


@pytest.fixture
async def pool_for() -> AsyncIterator[Any]:
    pools: list[RelayPool] = []

    async def make(cfg: RelayConfig) -> RelayPool:
        pool = RelayPool(cfg)
        await pool.start(health_checks=False)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


# -- happy path and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("chunking", [False, True])
async def test_pipelined_delivery_to_the_sink(pool_for: Any, chunking: bool) -> None:
    async with SmtpSink(keep=10, chunking=chunking) as sink:
        pool = await pool_for(
            cfg_for(RelayNode(name="s", host="127.0.0.1", port=sink.port, tls="none"))
        )
        for i in range(5):
            result = await pool.send("a@sender.test", ["r@example.test"], msg(i))
            assert result.kind is OutcomeKind.RELAYED
            assert result.reply_code == 250
    assert sink.stats.messages == 5
    # Dot-stuffed on the wire for DATA; BDAT carries the message as it is.
    assert sink.kept[0].endswith(
        b"body 0\r\n.leading dot\r\n" if chunking else b"body 0\r\n..leading dot\r\n"
    )


async def test_commands_go_out_in_one_group(server: PipeServer, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(server.node()))
    rcpts = [f"r{i}@example.test" for i in range(5)]
    for i in range(3):
        assert (await pool.send("a@sender.test", rcpts, msg(i))).kind is OutcomeKind.RELAYED
    assert server.pipelined == 3
    assert server.connections == 1
    assert server.messages[2] == msg(2)


async def test_refused_recipient_at_the_sink(pool_for: Any) -> None:
    async with SmtpSink(rcpt_rules={b"bad": b"550 5.1.1 no such user"}) as sink:
        pool = await pool_for(
            cfg_for(RelayNode(name="s", host="127.0.0.1", port=sink.port, tls="none"))
        )
        result = await pool.send("a@sender.test", ["ok@x.test", "bad1@x.test"], msg(1))
        assert result.kind is OutcomeKind.RELAYED
        assert [(r.recipient, r.kind, r.reply_code) for r in result.refused] == [
            ("bad1@x.test", OutcomeKind.FAILED, 550)
        ]
        assert result.refused[0].enhanced_status == "5.1.1"
    assert sink.stats.messages == 1


@pytest.mark.parametrize("data_reply", [b"554 5.5.1 no valid recipients", b"354 go ahead"])
async def test_every_recipient_refused(
    server: PipeServer, pool_for: Any, data_reply: bytes
) -> None:
    # RFC 2920 §3.1: the DATA of the group may still be accepted; the client then sends "."
    server.rcpt = {"bad": b"550 5.1.1 no such user", "later": b"450 4.2.1 try later"}
    server.data_without_rcpt = data_reply
    pool = await pool_for(cfg_for(server.node()))
    failed = await pool.send("a@sender.test", ["bad1@x.test", "bad2@x.test"], msg(1))
    assert (failed.kind, failed.reply_code, len(failed.refused)) == (OutcomeKind.FAILED, 550, 2)
    deferred = await pool.send("a@sender.test", ["bad@x.test", "later@x.test"], msg(2))
    assert (deferred.kind, deferred.reply_code) == (OutcomeKind.DEFERRED, 450)
    assert deferred.throttled
    ok = await pool.send("a@sender.test", ["ok@x.test"], msg(3))
    assert ok.kind is OutcomeKind.RELAYED
    assert server.messages == [msg(3)]
    assert server.connections == 1  # reset and reused, not dropped


async def test_smtputf8_and_8bitmime_are_declared(server: PipeServer, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(server.node()))
    body = "Subject: café\r\n\r\nné\r\n".encode()
    result = await pool.send("bounce@sender.test", ["josé@exemple.test"], body)
    assert result.kind is OutcomeKind.RELAYED
    assert server.commands == [
        f"MAIL FROM:<bounce@sender.test> SMTPUTF8 SIZE={len(body)} BODY=8BITMIME\r\n".encode(),
        "RCPT TO:<josé@exemple.test>\r\n".encode(),
    ]
    assert server.messages == [body]


async def test_unusable_addresses_are_refused_locally(server: PipeServer, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["ok@x.test", "a b@x.test"], msg(1))
    assert result.kind is OutcomeKind.RELAYED
    assert result.refused[0].enhanced_status == "5.1.3"
    bad_sender = await pool.send("a@x.test\x00", ["ok@x.test"], msg(2))
    assert (bad_sender.kind, bad_sender.enhanced_status) == (OutcomeKind.FAILED, "5.1.7")
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    ("verb", "reply", "kind"),
    [
        ("MAIL", b"451 4.3.0 try again later", OutcomeKind.DEFERRED),
        ("MAIL", b"553 5.1.8 bad sender domain", OutcomeKind.FAILED),
        ("DATA", b"452 4.3.1 insufficient storage", OutcomeKind.DEFERRED),
        ("DATA", b"250 2.0.0 but no 354", OutcomeKind.DEFERRED),  # never RELAYED without a 354
        ("END", b"554-5.7.1 rejected\r\n554 5.7.1 as spam", OutcomeKind.FAILED),
    ],
)
async def test_refusals_at_each_stage(
    server: PipeServer, pool_for: Any, verb: str, reply: bytes, kind: OutcomeKind
) -> None:
    server.reply[verb] = reply
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1))
    assert result.kind is kind
    assert result.nodes_tried == 1
    del server.reply[verb]
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(2))).kind is OutcomeKind.RELAYED
    assert server.connections == 1


async def test_multiline_refusal_text(server: PipeServer, pool_for: Any) -> None:
    server.rcpt = {"bad": b"550-5.1.1 no such user\r\n550 5.1.1 see the docs"}
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["ok@x.test", "bad@x.test"], msg(1))
    assert result.kind is OutcomeKind.RELAYED
    assert result.refused[0].reply == "5.1.1 no such user\n5.1.1 see the docs"


async def test_421_at_rcpt_ends_the_session(server: PipeServer, pool_for: Any) -> None:
    server.rcpt = {"b": b"421 4.7.0 too many connections"}
    server.on = 1
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["a@x.test", "b@x.test", "c@x.test"], msg(1))
    assert (result.kind, result.reply_code, result.throttled) == (OutcomeKind.DEFERRED, 421, True)
    assert result.nodes_tried == 1  # a reply, not a node failure: no failover
    assert [r.recipient for r in result.refused] == ["b@x.test", "c@x.test"]
    assert server.messages == []
    assert (await pool.send("a@sender.test", ["a@x.test"], msg(2))).kind is OutcomeKind.RELAYED
    assert server.connections == 2  # the 421'd session was closed, a new one opened
    assert pool.snapshot()[0].failures == 0


async def test_421_at_mail(server: PipeServer, pool_for: Any) -> None:
    server.reply["MAIL"] = b"421 4.3.2 shutting down"
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["a@x.test"], msg(1))
    assert (result.kind, result.reply_code, result.nodes_tried) == (OutcomeKind.DEFERRED, 421, 1)
    assert pool.snapshot()[0].connections_open == 0


# -- connection trouble ---------------------------------------------------------------------------


def two(server: PipeServer, spare: PipeServer, **kw: Any) -> RelayConfig:
    return cfg_for(server.node("a"), spare.node("b"), breaker_failures=100, **kw)


#: An affinity key that ranks node "a" before node "b": every message tries ``server`` first.
A_FIRST = next(
    f"d{i}.test" for i in range(1000) if rendezvous_order(f"d{i}.test", WEIGHTS)[0] == "a"
)


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
async def test_drop_before_354_fails_over(
    server: PipeServer, spare: PipeServer, pool_for: Any, verb: str
) -> None:
    server.drop = verb
    pool = await pool_for(two(server, spare))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.node, result.nodes_tried) == (OutcomeKind.RELAYED, "b", 2)
    assert server.messages == []
    assert len(spare.messages) == 1


async def test_drop_after_payload_is_deferred_not_resent(
    server: PipeServer, spare: PipeServer, pool_for: Any
) -> None:
    server.drop = "END"
    pool = await pool_for(two(server, spare))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.reply_code, result.node) == (OutcomeKind.DEFERRED, None, "a")
    assert "may have it" in result.reply
    assert spare.messages == []


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
async def test_timeout_before_354_fails_over(
    server: PipeServer, spare: PipeServer, pool_for: Any, verb: str
) -> None:
    server.hang = verb
    pool = await pool_for(two(server, spare, command_timeout_s=0.3))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.node, result.nodes_tried) == (OutcomeKind.RELAYED, "b", 2)
    assert f"no reply to {verb} within 0.3 s" in (pool.snapshot()[0].last_error or "")


async def test_timeout_after_payload_is_deferred(
    server: PipeServer, spare: PipeServer, pool_for: Any
) -> None:
    server.hang = "END"
    pool = await pool_for(two(server, spare, command_timeout_s=0.3))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.reply_code, result.node) == (OutcomeKind.DEFERRED, None, "a")
    assert spare.messages == []


async def test_malformed_reply_before_payload_fails_over(
    server: PipeServer, spare: PipeServer, pool_for: Any
) -> None:
    server.reply["MAIL"] = b"hello there"
    pool = await pool_for(two(server, spare))
    result = await pool.send("a@sender.test", ["r@x.test"], msg(1), affinity=A_FIRST)
    assert (result.kind, result.node) == (OutcomeKind.RELAYED, "b")


async def test_session_closed_while_idle_is_replaced(server: PipeServer, pool_for: Any) -> None:
    server.drop, server.on = "MAIL", 2  # the node hangs up at the second transaction
    pool = await pool_for(cfg_for(server.node()))
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(1))).kind is OutcomeKind.RELAYED
    result = await pool.send("a@sender.test", ["r@x.test"], msg(2))
    assert (result.kind, result.nodes_tried) == (OutcomeKind.RELAYED, 1)
    assert server.connections == 2
    assert pool.snapshot()[0].failures == 0


async def test_sessions_are_recycled(server: PipeServer, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(server.node(max_messages_per_connection=3)))
    for i in range(10):
        assert (await pool.send("a@sender.test", ["r@x.test"], msg(i))).kind is OutcomeKind.RELAYED
    assert server.connections == 4
    assert server.pipelined == 10


async def test_cancelled_send_leaves_no_broken_session(server: PipeServer, pool_for: Any) -> None:
    server.hang, server.on = "END", 1
    pool = await pool_for(cfg_for(server.node()))
    task = asyncio.create_task(pool.send("a@sender.test", ["r@x.test"], msg(1)))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.hang = None
    assert (await pool.send("a@sender.test", ["r@x.test"], msg(2))).kind is OutcomeKind.RELAYED
    assert server.connections == 2


# -- volume, both paths ---------------------------------------------------------------------------


async def test_500_concurrent_messages_delivered_once(pool_for: Any) -> None:
    async with SmtpSink() as sink:
        node = RelayNode(name="s", host="127.0.0.1", port=sink.port, tls="none", max_connections=8)
        pool = await pool_for(cfg_for(node))
        results = await asyncio.gather(
            *(pool.send("a@sender.test", ["r@x.test"], msg(i)) for i in range(500))
        )
        assert Counter(r.kind for r in results) == {OutcomeKind.RELAYED: 500}
        assert pool.snapshot()[0].connections_open <= 8
    assert len(sink.stats.message_ids) == 500
    assert sink.stats.duplicates == 0


async def test_500_concurrent_messages_without_pipelining(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(mailu.relay_node("m", max_connections=8)))
    results = await asyncio.gather(
        *(pool.send("a@sender.test", ["r@x.test"], msg(i)) for i in range(500))
    )
    assert Counter(r.kind for r in results) == {OutcomeKind.RELAYED: 500}
    assert mailu.count() == 500
    assert mailu.duplicates() == {}
    assert mailu.connections <= 8


async def test_8bit_body_without_pipelining(mailu: FakeMailU, pool_for: Any) -> None:
    pool = await pool_for(cfg_for(mailu.relay_node("m")))
    body = "Subject: café\r\nMessage-ID: <8bit@sender.test>\r\n\r\nné\r\n".encode()
    assert (await pool.send("a@sender.test", ["r@x.test"], body)).kind is OutcomeKind.RELAYED
    assert mailu.message_ids() == ["<8bit@sender.test>"]


async def test_pipelining_can_be_switched_off(
    server: PipeServer, pool_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NodePool, "pipelining", False)
    server.rcpt = {"bad": b"550 5.1.1 no such user"}
    pool = await pool_for(cfg_for(server.node()))
    result = await pool.send("a@sender.test", ["ok@x.test", "bad@x.test"], msg(1))
    assert result.kind is OutcomeKind.RELAYED
    assert len(result.refused) == 1
    assert server.pipelined == 0


# -- TLS, asyncio and uvloop ----------------------------------------------------------------------


async def tls_scenario(server: PipeServer, pool: RelayPool) -> None:
    server.rcpt = {"bad": b"550 5.1.1 no such user"}
    for i in range(20):
        result = await pool.send("a@sender.test", ["ok@x.test", "bad@x.test"], msg(i))
        assert result.kind is OutcomeKind.RELAYED
        assert len(result.refused) == 1
    server.drop = "END"
    lost = await pool.send("a@sender.test", ["ok@x.test"], msg(99))
    assert (lost.kind, lost.reply_code) == (OutcomeKind.DEFERRED, None)
    server.drop = None
    assert (await pool.send("a@sender.test", ["ok@x.test"], msg(100))).kind is OutcomeKind.RELAYED
    assert server.pipelined == 22
    assert len(server.messages) == 21
    assert server.connections == 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipelining_over_implicit_tls(loop: str, tmp_path: Any) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def scenario() -> None:
        async with PipeServer(tls=server_ctx) as server:
            cfg = cfg_for(server.node(ca_file=str(ca_file)), health_interval_s=0)
            async with RelayPool(cfg) as pool:
                await tls_scenario(server, pool)

    if loop == "uvloop":
        uvloop.run(scenario())
    else:
        asyncio.run(scenario())
