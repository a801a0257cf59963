"""A fake MailU relay node for integration and chaos tests: a real SMTP server, in-process.

It is aiosmtpd on 127.0.0.1 (port 0 = any free port) running in its own thread with its own event
loop, so it serves the test's asyncio code and a daemon started as a subprocess alike. It speaks
what a MailU front does — plain, STARTTLS (587) or implicit TLS (465) with a ``trustme`` CA, AUTH
PLAIN/LOGIN — and lets a test break it at runtime::

    with FakeMailU(auth=("u", "p"), tls="starttls") as node:
        cfg = RelayNode(name="a", host=node.host, port=node.port, tls="starttls",
                        username="u", password="p", ca_file=node.ca_pem_path)
        node.fail_rcpt(r"^bad", 550, "5.1.1 no such user")
        node.set_reply("DATA", 421, "4.7.0 try later", times=1)
        node.drop_after_data(n=1)          # read the message, then hang up without a reply
        node.delay_s = 2                   # every MAIL/RCPT/DATA reply comes 2 s late
        node.stop(); node.start()          # down (connections refused), back on the same port
        assert node.count() == 10 and not node.duplicates()

Every accepted message is recorded (:class:`ReceivedMessage`); ``message_id_counts()`` is what
at-least-once tests count duplicates with. Nothing is logged per message, so the fake takes a few
thousand messages per second.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import shutil
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from engine.config import RelayNode

__all__ = ["FakeMailU", "ReceivedMessage", "Stage", "TlsMode"]

Stage = Literal["MAIL", "RCPT", "DATA"]
TlsMode = Literal["none", "starttls", "implicit"]
_STAGES: tuple[Stage, ...] = ("MAIL", "RCPT", "DATA")

# RFC 5321 §4.2.2 / RFC 3463 replies the fake gives when nothing is injected.
_OK_MAIL = "250 2.1.0 Ok"
_OK_RCPT = "250 2.1.5 Ok"
_AUTH_REQUIRED = "530 5.7.0 Authentication required"  # RFC 4954 §6

# Message-ID in the header block (RFC 5322 §3.6.4); the header block ends at the first empty line.
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_SERVER_NAME = "mailu.test"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the fake node accepted (answered 250 to, or recorded before a drop)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None
    connection: int  # sequence number of the SMTP connection it came on
    authenticated_as: str | None
    tls: bool


@dataclass(slots=True)
class _Reply:
    code: int
    text: str
    times: int | None  # None: every time

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(slots=True)
class _Drop:
    times: int
    accept: bool


@dataclass(slots=True)
class _Faults:
    replies: dict[str, _Reply] = field(default_factory=dict)
    rcpt_rules: list[tuple[re.Pattern[str], int, str]] = field(default_factory=list)
    drops: dict[str, _Drop] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)


def _message_id(data: bytes) -> str | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 2]
    m = _MESSAGE_ID.search(head)
    return m.group(1).decode("utf-8", "replace") if m else None


class _QuietDeprecatedLoginData(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning on every successful AUTH; it is its own noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietDeprecatedLoginData())


class _TestCA:
    """One trustme CA and server certificate per test process (key generation is not free)."""

    _lock = threading.Lock()
    _instance: _TestCA | None = None

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost", _SERVER_NAME)

    @classmethod
    def get(cls) -> _TestCA:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


class _Handler:
    """aiosmtpd hooks; runs on the fake's own loop, reads the faults the test thread set."""

    def __init__(self, node: FakeMailU) -> None:
        self.node = node

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        node = self.node
        await node._maybe_delay("MAIL")
        if node.auth is not None and not session.authenticated:
            return _AUTH_REQUIRED
        await node._maybe_drop("MAIL", server, envelope)
        reply = node._take_reply("MAIL")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return _OK_MAIL

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        node = self.node
        await node._maybe_delay("RCPT")
        await node._maybe_drop("RCPT", server, envelope)
        for pattern, code, text in node._faults.rcpt_rules:
            if pattern.search(address):
                return f"{code} {text}"
        reply = node._take_reply("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return _OK_RCPT

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        node = self.node
        await node._maybe_delay("DATA")
        await node._maybe_drop("DATA", server, envelope)
        reply = node._take_reply("DATA")
        if reply is not None:
            return reply
        n = node._record(server, envelope)
        return f"250 2.0.0 Ok: queued as FAKE{n:08d}"


def _authenticator(expected: tuple[str, str]) -> Any:
    want = (expected[0].encode(), expected[1].encode())

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == want
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check


class _ServerThread:
    """An asyncio server on its own thread; ``stop()`` aborts every open connection too."""

    def __init__(
        self, node: FakeMailU, host: str, port: int, ssl_ctx: ssl.SSLContext | None
    ) -> None:
        self._node = node
        self._host = host
        self._port = port
        self._ssl = ssl_ctx
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._protocols: weakref.WeakSet[Any] = weakref.WeakSet()
        self.port = port
        self._thread = threading.Thread(target=self._run, name=f"fake-mailu-{port}", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fake MailU did not start listening")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread, never lost
            self._error = exc
            self._ready.set()

    def _factory(self) -> Any:
        proto = self._node._make_protocol(asyncio.get_running_loop())
        self._protocols.add(proto)
        return proto

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await self._loop.create_server(
            self._factory, host=self._host, port=self._port, ssl=self._ssl, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for proto in list(self._protocols):
                transport = getattr(proto, "transport", None)
                if transport is not None:
                    transport.abort()
            await server.wait_closed()
            # Let connection_lost callbacks run so aiosmtpd cancels its per-connection tasks.
            for _ in range(3):
                await asyncio.sleep(0)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(10.0)


class FakeMailU:
    """A fake MailU node; see the module docstring for the API."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        tls: TlsMode = "none",
        host: str = "127.0.0.1",
        port: int = 0,
        data_size_limit: int = 50 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.auth = auth
        self.tls: TlsMode = tls
        self.data_size_limit = data_size_limit
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[ReceivedMessage] = []
        self._faults = _Faults()
        self._conn_seq = itertools.count(1)
        self._conn_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._connections = 0
        self._server: _ServerThread | None = None
        self._tmpdir: Path | None = None
        self._ca_pem_path: Path | None = None
        self._server_ctx: ssl.SSLContext | None = None
        if tls != "none":
            self._setup_tls()

    # -- lifecycle ------------------------------------------------------------------------------

    def _setup_tls(self) -> None:
        ca = _TestCA.get()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="fake-mailu-"))
        self._ca_pem_path = self._tmpdir / "ca.pem"
        ca.ca.cert_pem.write_to_path(str(self._ca_pem_path))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.cert.configure_cert(ctx)
        self._server_ctx = ctx

    @property
    def ca_pem_path(self) -> str:
        """PEM file of the CA that signed the node's certificate (for ``ca_file``)."""
        if self._ca_pem_path is None:
            raise RuntimeError("this FakeMailU runs without TLS; pass tls='starttls'|'implicit'")
        return str(self._ca_pem_path)

    def relay_node(self, name: str = "mailu", **overrides: Any) -> RelayNode:
        """A ``[[relay.nodes]]`` entry pointing at this fake (credentials and CA filled in)."""
        fields: dict[str, Any] = {
            "name": name,
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
        }
        if self.auth is not None:
            fields["username"], fields["password"] = self.auth
        if self.tls != "none":
            fields["ca_file"] = self.ca_pem_path
        fields.update(overrides)
        return RelayNode(**fields)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the node's certificate."""
        return ssl.create_default_context(cafile=self.ca_pem_path)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeMailU:
        """Listen (again) — on the same port after a ``stop()``, so clients find it back."""
        if self._server is not None:
            return self
        implicit = self._server_ctx if self.tls == "implicit" else None
        server = _ServerThread(self, self.host, self.port, implicit)
        server.start()
        self.port = server.port
        self._server = server
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: the node is down, connects are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def close(self) -> None:
        """Stop and remove the temporary CA file."""
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> FakeMailU:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_protocol(self, loop: asyncio.AbstractEventLoop) -> Any:
        with self._lock:
            self._connections += 1
        starttls = self._server_ctx if self.tls == "starttls" else None
        proto = SMTP(
            _Handler(self),
            loop=loop,
            hostname=_SERVER_NAME,
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            tls_context=starttls,
            require_starttls=starttls is not None,
            # AUTH is checked in handle_MAIL (so implicit TLS works too); aiosmtpd's own
            # auth_required would warn when TLS is not STARTTLS.
            auth_required=False,
            auth_require_tls=self.tls == "starttls",
            authenticator=_authenticator(self.auth) if self.auth else None,
        )
        self._conn_ids[proto] = next(self._conn_seq)
        return proto

    # -- fault injection (call from the test thread at any time) --------------------------------

    def set_reply(self, stage: Stage, code: int, text: str, *, times: int | None = None) -> None:
        """Answer ``code text`` at MAIL, RCPT or DATA (end of data), ``times`` times or always."""
        self._check_stage(stage)
        with self._lock:
            self._faults.replies[stage] = _Reply(code, text, times)

    def fail_rcpt(self, pattern: str, code: int, text: str) -> None:
        """Answer ``code text`` to RCPT for every recipient matching the regex ``pattern``."""
        with self._lock:
            self._faults.rcpt_rules.append((re.compile(pattern), code, text))

    def drop(self, stage: Stage, n: int = 1, *, accept: bool = False) -> None:
        """Hang up without replying at ``stage``, for the next ``n`` times.

        At DATA the whole message has been read first; ``accept=True`` records it as received
        (a node that queued the mail and died before saying so — the duplicate window).
        """
        self._check_stage(stage)
        with self._lock:
            self._faults.drops[stage] = _Drop(n, accept)

    def drop_after_data(self, n: int = 1, *, accept: bool = False) -> None:
        """Read the next ``n`` messages, then drop the connection without a reply."""
        self.drop("DATA", n, accept=accept)

    def set_delay(self, stage: Stage, seconds: float) -> None:
        """Wait ``seconds`` before each reply at ``stage``."""
        self._check_stage(stage)
        with self._lock:
            self._faults.delays[stage] = seconds

    @property
    def delay_s(self) -> float:
        """The delay before every MAIL, RCPT and DATA reply (0: none)."""
        return max(self._faults.delays.values(), default=0.0)

    @delay_s.setter
    def delay_s(self, seconds: float) -> None:
        with self._lock:
            self._faults.delays = dict.fromkeys(_STAGES, seconds)

    def reset_faults(self) -> None:
        """Back to a healthy node (received messages are kept)."""
        with self._lock:
            self._faults = _Faults()

    @staticmethod
    def _check_stage(stage: str) -> None:
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, not {stage!r}")

    # -- called on the server loop --------------------------------------------------------------

    async def _maybe_delay(self, stage: str) -> None:
        delay = self._faults.delays.get(stage)
        if delay:
            await asyncio.sleep(delay)

    def _take_reply(self, stage: str) -> str | None:
        if stage not in self._faults.replies:  # fast path, no lock
            return None
        with self._lock:
            reply = self._faults.replies.get(stage)
            if reply is None:
                return None
            if reply.times is not None:
                reply.times -= 1
                if reply.times <= 0:
                    del self._faults.replies[stage]
            return reply.line

    async def _maybe_drop(self, stage: str, server: Any, envelope: Any) -> None:
        if stage not in self._faults.drops:
            return
        with self._lock:
            drop = self._faults.drops.get(stage)
            if drop is None:
                return
            drop.times -= 1
            if drop.times <= 0:
                del self._faults.drops[stage]
        if drop.accept and stage == "DATA":
            self._record(server, envelope)
        server.transport.abort()
        # connection_lost() cancels this handler; never answer.
        await asyncio.sleep(3600)

    def _record(self, server: Any, envelope: Any) -> int:
        data: bytes = envelope.original_content or b""
        session = server.session
        login = getattr(session.auth_data, "login", None)
        msg = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            message_id=_message_id(data),
            connection=self._conn_ids.get(server, 0),
            authenticated_as=login.decode() if isinstance(login, bytes) else None,
            tls=session.ssl is not None or self.tls == "implicit",
        )
        with self._arrived:
            self._received.append(msg)
            self._arrived.notify_all()
            return len(self._received)

    # -- what arrived -----------------------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedMessage]:
        """A copy of every accepted message, in arrival order."""
        with self._lock:
            return list(self._received)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def message_ids(self) -> list[str | None]:
        with self._lock:
            return [m.message_id for m in self._received]

    def message_id_counts(self) -> collections.Counter[str | None]:
        """How many times each Message-ID arrived (duplicates have a count above 1)."""
        return collections.Counter(self.message_ids())

    def duplicates(self) -> dict[str | None, int]:
        """Message-IDs that arrived more than once, with their counts."""
        return {k: n for k, n in self.message_id_counts().items() if n > 1}

    @property
    def connections(self) -> int:
        """SMTP connections accepted since the fake was created."""
        with self._lock:
            return self._connections

    def clear(self) -> None:
        """Forget received messages and the connection count."""
        with self._lock:
            self._received.clear()
            self._connections = 0

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` messages arrived (from sync code or a subprocess test)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
            return True

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> bool:
        """Like :meth:`wait_for` without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def __iter__(self) -> Iterator[ReceivedMessage]:
        return iter(self.received)

    def __repr__(self) -> str:
        state = "up" if self.running else "down"
        return f"<FakeMailU {self.host}:{self.port} tls={self.tls} {state} got={self.count()}>"
