"""`engine nodes check` against real SMTP servers (aiosmtpd): capabilities, TLS, AUTH, dry runs.

The server plays a MailU node: DSN offered or not, AUTH with a login map that refuses senders
the user does not own (Postfix's ``reject_sender_login_mismatch`` wording), STARTTLS with a
trustme certificate. A node that is down or stalls gives a clear report and exit 1.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from engine.cli import main
from engine.config import Config
from engine.nodes.check import run_check
from engine.nodes.report import HINT_LOGIN, HINT_RATE, render
from tests.conftest import REDIS_URL, TEST_VERP_SECRET, make_config
from tests.fakes.postfix import PostfixNode

USER, PASSWORD = "relay@mailu.test", "s3cret-pass"
_DSN_PARAM = re.compile(r"\s+(RET|ENVID|NOTIFY|ORCPT)=\S+", re.I)


@dataclass
class Node:
    """A MailU-like node: what it offers and what it refuses; records what it was sent."""

    dsn: bool = True
    owned: tuple[str, ...] | None = None  # domains the AUTH user may send from (None: any)
    mail_reply: str | None = None  # a fixed refusal of every MAIL FROM
    seen: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        domain = address.rpartition("@")[2]
        if self.owned is not None and session.authenticated and domain not in self.owned:
            login = session.auth_data.login.decode()
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {login}"
        envelope.mail_from = address
        return "250 2.1.0 Ok"


class _DsnSMTP(SMTP):
    """aiosmtpd refuses parameters it does not know (555); a DSN node takes RFC 3461's."""

    node: Node

    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg:
            self.node.seen.append(f"MAIL {arg}")
            if self.node.dsn:
                arg = _DSN_PARAM.sub("", arg)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg:
            self.node.seen.append(f"RCPT {arg}")
            if self.node.dsn:
                arg = _DSN_PARAM.sub("", arg)
        await super().smtp_RCPT(arg)


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def serve(
    node: Node, *, tls: ssl.SSLContext | None = None, auth: bool = False
) -> tuple[asyncio.Server, int]:
    def factory() -> SMTP:
        proto = _DsnSMTP(
            node,
            hostname="mailu.test",
            enable_SMTPUTF8=True,
            tls_context=tls,
            require_starttls=tls is not None,
            auth_required=False,
            auth_require_tls=tls is not None,
            authenticator=_auth if auth else None,
        )
        proto.node = node
        return proto

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def servers() -> AsyncIterator[list[asyncio.Server]]:
    started: list[asyncio.Server] = []
    yield started
    for s in started:
        s.close()
        await s.wait_closed()


def config(
    *nodes: dict[str, Any], verp_domain: str = "bounces.engine.test", **sections: dict[str, Any]
) -> Config:
    return make_config(
        "postgresql://127.0.0.1:1/none",
        "unused",
        relay={"nodes": list(nodes), "helo_name": "engine.test"},
        inbound={"verp_domain": verp_domain, "verp_secret": TEST_VERP_SECRET},
        **sections,
    )


DKIM = {
    "keys": [
        {"domain": "shop.example", "selector": "s1", "private_key_file": "/nonexistent"},
        {"domain": "other.example", "selector": "s1", "private_key_file": "/nonexistent"},
    ]
}


async def test_plain_node_with_dsn_accepts_everything(servers: list[asyncio.Server]) -> None:
    node = Node(dsn=True)
    server, port = await serve(node)
    servers.append(server)
    cfg = config({"name": "m1", "host": "127.0.0.1", "port": port, "tls": "none"}, dkim=DKIM)
    report = await run_check(cfg, None, timeout_s=5)
    assert report.ok
    (n,) = report.nodes
    assert n.capabilities["DSN"] and n.capabilities["8BITMIME"] and n.capabilities["SMTPUTF8"]
    assert not n.capabilities["PIPELINING"] and not n.capabilities["CHUNKING"]
    assert n.size_limit is not None and n.tls is None and n.auth == "not configured"
    assert [p.what for p in n.probes] == ["verp", "sender", "sender"]
    assert all(p.ok for p in n.probes)
    assert n.probes[0].mail_from.startswith("b-0-") and n.probes[0].mail_from.endswith(
        "@bounces.engine.test"
    )
    # The dry run carries the DSN parameters the daemon sends, so a node refusing them shows.
    assert any("RET=HDRS" in s and "ENVID=nodes-check" in s for s in node.seen)
    assert any(s.startswith("RCPT") and "NOTIFY=FAILURE,DELAY" in s for s in node.seen)
    assert not any("no DSN" in note for note in n.notes)
    assert "no database" in report.notes[0]


async def test_node_without_dsn_is_ok_but_says_feedback_is_off(
    servers: list[asyncio.Server],
) -> None:
    node = Node(dsn=False)
    server, port = await serve(node)
    servers.append(server)
    cfg = config({"name": "m1", "host": "127.0.0.1", "port": port, "tls": "none"})
    report = await run_check(cfg, None, timeout_s=5)
    assert report.ok
    (n,) = report.nodes
    assert not n.capabilities["DSN"]
    assert any("delivery feedback" in note for note in n.notes)
    assert not any("RET=" in s for s in node.seen)  # no DSN parameters to a node without DSN


async def test_starttls_auth_and_a_sender_outside_the_login_map(
    servers: list[asyncio.Server],
    ca: trustme.CA,
    ca_file: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    node = Node(dsn=True, owned=("bounces.engine.test", "shop.example"))
    server, port = await serve(node, tls=tls, auth=True)
    servers.append(server)
    entry = {
        "name": "m1",
        "host": "127.0.0.1",
        "port": port,
        "tls": "starttls",
        "username": USER,
        "password": PASSWORD,
        "ca_file": ca_file,
    }
    cfg = config(entry, dkim=DKIM)
    report = await run_check(cfg, None, timeout_s=5)
    assert not report.ok
    (n,) = report.nodes
    assert n.failed_step is None and n.auth == "ok"
    assert n.auth_mechanisms and "PLAIN" in n.auth_mechanisms
    assert n.tls is not None and n.tls.verified and n.tls.version in ("TLSv1.2", "TLSv1.3")
    assert n.tls.cipher and n.tls.issuer and "trustme" in n.tls.issuer.lower()
    assert n.tls.days_left is not None and n.tls.days_left > 0
    verp_probe, shop, other = n.probes
    assert verp_probe.ok and shop.ok
    assert not other.ok and other.stage == "MAIL" and other.reply_code == 553
    assert other.hint == HINT_LOGIN.format(domain="other.example")
    text = render(report)
    assert "REFUSED at MAIL: 553" in text and "Allow the user to spoof the sender" in text
    assert "verdict: m1 refuse(s)" in text

    # The CLI: same report, exit 1 (DESIGN §8), JSON on request.
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[relay]\nhelo_name = "engine.test"\n[[relay.nodes]]\nname = "m1"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntls = "starttls"\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
        f'ca_file = "{ca_file}"\n[inbound]\nverp_secret = "{TEST_VERP_SECRET}"\n'
        '[[dkim.keys]]\ndomain = "other.example"\nselector = "s1"\n'
        'private_key_file = "/nonexistent"\n[redis]\n'
        f'url = "{REDIS_URL}"\n'
    )
    code = await asyncio.to_thread(
        main, ["nodes", "check", "m1", "--config", str(path), "--json", "--no-db", "--timeout", "5"]
    )
    assert code == 1
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["ok"] is False and doc["nodes"][0]["probes"][1]["reply_code"] == 553


async def test_wrong_password_and_untrusted_certificate_fail_with_a_hint(
    servers: list[asyncio.Server], ca: trustme.CA, ca_file: str
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    server, port = await serve(Node(), tls=tls, auth=True)
    servers.append(server)
    base = {"host": "127.0.0.1", "port": port, "tls": "starttls", "username": USER}
    cfg = config(
        {**base, "name": "badpass", "password": "wrong", "ca_file": ca_file},
        {**base, "name": "untrusted", "password": PASSWORD},  # system CAs: trustme unknown
    )
    report = await run_check(cfg, None, timeout_s=5)
    assert not report.ok
    badpass, untrusted = report.nodes
    assert badpass.failed_step == "auth" and badpass.auth == "refused"
    assert badpass.tls is not None and badpass.capabilities["DSN"]  # what came before AUTH
    assert badpass.hint is not None and "password_file" in badpass.hint
    assert untrusted.failed_step == "starttls" and "certificate" in (untrusted.error or "").lower()
    assert untrusted.hint is not None and "ca_file" in untrusted.hint


async def test_rate_limit_refusal_names_message_ratelimit(servers: list[asyncio.Server]) -> None:
    node = Node(mail_reply="450 4.7.1 Error: too much mail from 127.0.0.1")
    server, port = await serve(node)
    servers.append(server)
    cfg = config({"name": "m1", "host": "127.0.0.1", "port": port, "tls": "none"})
    report = await run_check(cfg, None, timeout_s=5)
    (probe,) = report.nodes[0].probes
    assert not report.ok and probe.reply_code == 450 and probe.hint == HINT_RATE


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A socket that accepts connections (kernel backlog) and never greets."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_down_and_stalled_nodes_exit_1_without_a_traceback(
    free_port: int, stalled_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[[relay.nodes]]\nname = "down"\nhost = "127.0.0.1"\nport = {free_port}\ntls = "none"\n'
        f'[[relay.nodes]]\nname = "stalled"\nhost = "127.0.0.1"\nport = {stalled_port}\n'
        'tls = "none"\n[relay]\nhelo_name = "engine.test"\n'
        f'[inbound]\nverp_secret = "{TEST_VERP_SECRET}"\n'
    )
    assert main(["nodes", "check", "--config", str(path), "--no-db", "--timeout", "0.5"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "node down 127.0.0.1" in out and "failed at connect" in out
    assert "nothing listens on port" in out
    stalled = out[out.index("node stalled") :]
    assert "failed at connect" in stalled and "no answer in time" in stalled
    assert "verdict: down, stalled refuse(s)" in out


def test_unknown_node_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "engine.toml"
    path.write_text('[[relay.nodes]]\nname = "m1"\nhost = "127.0.0.1"\n')
    assert main(["nodes", "check", "nope", "--config", str(path), "--no-db"]) == 2
    assert "no relay node named 'nope'" in capsys.readouterr().err


async def test_sender_domains_come_from_the_database(
    servers: list[asyncio.Server], pool: asyncpg.Pool, cfg: Config
) -> None:
    await pool.execute("INSERT INTO oltp.tenants (tenant_id) VALUES ('acme'), ('beta')")
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain) VALUES"
        " ('acme', 'news@shop.example', 'shop.example'),"
        " ('beta', 'hi@shop.example', 'shop.example'),"
        " ('beta', 'a@beta.example', 'beta.example'),"
        " ('beta', 'b@third.example', 'third.example')"
    )
    node = Node(dsn=True)
    server, port = await serve(node)
    servers.append(server)
    check_cfg = msgspec.structs.replace(
        cfg,
        relay=msgspec.structs.replace(
            cfg.relay,
            nodes=config(
                {"name": "m1", "host": "127.0.0.1", "port": port, "tls": "none"}
            ).relay.nodes,
        ),
    )
    report = await run_check(check_cfg, pool, timeout_s=5, max_domains=2)
    probes = report.nodes[0].probes
    assert [(p.what, p.tenant_id, p.mail_from) for p in probes] == [
        ("verp", None, probes[0].mail_from),
        ("sender", "beta", "a@beta.example"),
        ("sender", "acme", "news@shop.example"),
    ]
    assert report.ok and "1 more sender domains not probed" in report.notes[0]


def test_real_postfix_node_submission_and_relay_ports(
    postfix_node: PostfixNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MailU's MTA: capabilities as Postfix offers them, and a sender outside the login map."""
    # The fixture's login map lets the relay user send from the default VERP domain only.
    sub = postfix_node.relay_node("submission")
    relay = postfix_node.relay_node("relaynets", submission=False)
    cfg = config(
        msgspec.to_builtins(sub),
        msgspec.to_builtins(relay),
        verp_domain="bounces.localhost",
        dkim={"keys": [DKIM["keys"][0]]},
    )
    report = asyncio.run(run_check(cfg, None, rcpt="postmaster@gmail.test", timeout_s=10))
    submission, relaynets = report.nodes
    assert not report.ok and relaynets.ok and not submission.ok

    caps = submission.capabilities
    assert caps["PIPELINING"] and caps["DSN"] and caps["SIZE"] and caps["8BITMIME"]
    assert caps["ENHANCEDSTATUSCODES"] and caps["SMTPUTF8"]
    assert not caps["CHUNKING"]  # discarded on the submission port, as MailU's front lacks it
    assert submission.size_limit == 50 * 1024 * 1024
    assert submission.tls is not None and submission.tls.verified
    assert submission.auth == "ok" and {"PLAIN", "LOGIN"} <= set(submission.auth_mechanisms)
    verp_probe, shop = submission.probes
    assert verp_probe.ok, verp_probe
    # Postfix delays its sender restrictions to RCPT (smtpd_delay_reject = yes).
    assert not shop.ok and shop.stage == "RCPT" and shop.reply_code == 553
    assert shop.reply is not None and "not owned by user" in shop.reply
    assert shop.hint == HINT_LOGIN.format(domain="shop.example")

    # Port 25 for RELAYNETS: no AUTH, CHUNKING offered, every sender accepted.
    assert relaynets.capabilities["CHUNKING"] and relaynets.capabilities["DSN"]
    assert relaynets.auth == "not configured" and all(p.ok for p in relaynets.probes)
    assert postfix_node.queue_size() == 0  # dry runs: nothing was queued
