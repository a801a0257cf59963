"""Sessions to one relay node, and the I/O that runs a sans-IO transaction on one of them.

A session is an ``aiosmtplib.SMTP`` client that aiosmtplib connected, greeted, upgraded with
STARTTLS and authenticated (:meth:`SessionOpener.open`): those steps, with their TLS and SASL
details, are what aiosmtplib does well, and ``engine nodes check`` reports them step by step.
A transaction does not go through aiosmtplib: aiosmtplib keeps one response waiter per command
and drops replies that arrive while none waits, so it cannot read a pipelined group. For the
transaction the session's transport is handed to a :class:`TransactionDriver`
(``transport.set_protocol``, public asyncio API for plain and TLS transports alike), which
writes what the :class:`~engine.relay.transaction.Transaction` asks and feeds it what it reads,
then hands the transport back. Connection loss and flow control are passed on to aiosmtplib's
protocol, so the client sees a drop during a transaction as it would have seen it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from engine.config import RelayConfig, RelayNode
from engine.relay.transaction import Outcome, Transaction
from engine.relay.wire import ReplyParser

__all__ = ["Session", "SessionOpener", "SessionStep", "TransactionDriver", "describe"]

log = logging.getLogger("engine.relay")

#: How long a polite QUIT may take before the socket is just closed.
QUIT_TIMEOUT_S = 2.0

#: Told the name of each step of opening a session ("connect", "ehlo", "starttls", "auth") just
#: before it runs, with the client as it is then: ``engine nodes check`` reports what each step
#: saw, and which one failed, from the same code the daemon connects with.
SessionStep = Callable[[str, aiosmtplib.SMTP], None]


def describe(exc: BaseException) -> str:
    """An exception as one line for logs and ``last_error`` (with its cause, if it adds one)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _no_step(step: str, smtp: aiosmtplib.SMTP) -> None:
    """The daemon's sessions report no steps."""


def tls_context(node: RelayNode) -> ssl.SSLContext | None:
    """The TLS context for ``node`` (None for ``tls = "none"``)."""
    if node.tls == "none":
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=node.ca_file)
    if not node.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning(
            "TLS certificate verification is off for a relay node",
            extra={"relay": node.name, "host": node.host},
        )
    return ctx


class TransactionDriver(asyncio.Protocol):
    """Stands in for aiosmtplib's protocol on a session's transport while a transaction runs.

    Owned by one session and reused for each of its transactions (its reply parser too).
    """

    def __init__(self, inner: SMTPProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.parser = ReplyParser()
        self._loop = loop
        self._tx: Transaction | None = None
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._progress_at = 0.0

    async def run(self, transport: asyncio.Transport, tx: Transaction, timeout: float) -> Outcome:
        """Run ``tx`` on ``transport`` until it has an outcome; ``timeout`` per reply."""
        loop = self._loop
        self._tx = tx
        self._transport = transport
        self._timeout = timeout
        self._progress_at = loop.time()
        self._waiter = waiter = loop.create_future()
        # One timer per session, re-armed lazily: each reply restarts the clock (the budget
        # aiosmtplib gives every command) without a cancel/reschedule per reply, and it is kept
        # from one transaction to the next (an early firing re-arms itself for the new one):
        # a libuv timer started and stopped per message cost a few microseconds each time.
        if self._timer is None:
            self._timer = loop.call_at(self._progress_at + timeout, self._check_timeout)
        transport.set_protocol(self)
        try:
            transport.write(tx.start())
            await waiter
        finally:
            transport.set_protocol(self.inner)
            self._tx = None
            self._waiter = None
        outcome = tx.outcome
        assert outcome is not None
        return outcome

    def close(self) -> None:
        """The session is done with: stop its reply timer now rather than at its next firing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _settle(self) -> None:
        waiter = self._waiter
        tx = self._tx
        if waiter is not None and tx is not None and tx.outcome is not None and not waiter.done():
            waiter.set_result(None)

    def _check_timeout(self) -> None:
        tx = self._tx
        if tx is None:  # between transactions: the next one arms a timer again
            self._timer = None
            return
        idle = self._loop.time() - self._progress_at
        if idle >= self._timeout:
            self._timer = None
            tx.timed_out(self._timeout)
            self._settle()
        else:
            self._timer = self._loop.call_at(self._progress_at + self._timeout, self._check_timeout)

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        tx = self._tx
        if tx is None:
            return
        self._progress_at = self._loop.time()
        out = tx.receive(data)
        if out and self._transport is not None:
            self._transport.write(out)
        self._settle()

    def eof_received(self) -> bool:
        if self._tx is not None:
            self._tx.connection_lost("connection closed by the node")
            self._settle()
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tx is not None:
            cause = f"connection lost: {exc}" if exc else "connection closed by the node"
            self._tx.connection_lost(cause)
            self._settle()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Session:
    """One open session: the client, its transaction driver, its use counters."""

    __slots__ = ("driver", "last_used", "protocol", "smtp", "transactions")

    def __init__(self, smtp: aiosmtplib.SMTP, now: float) -> None:
        self.smtp = smtp
        self.protocol = smtp.protocol
        self.driver: TransactionDriver | None = None  # made at the first transaction
        self.transactions = 0
        self.last_used = now

    async def run(self, tx: Transaction, timeout: float) -> Outcome:
        """Run ``tx`` on this session; closes the client when the outcome says it is spent."""
        if tx.outcome is None:
            proto = self.smtp.protocol
            transport = proto.transport if proto is not None else None
            if proto is None or transport is None or transport.is_closing():
                tx.connection_lost("connection lost")
            else:
                driver = self.driver
                if driver is None or driver.inner is not proto:
                    driver = self.driver = TransactionDriver(proto, asyncio.get_running_loop())
                # TCP or TLS transport: it reads and writes.
                await driver.run(transport, tx, timeout)  # type: ignore[arg-type]
        outcome = tx.outcome
        assert outcome is not None
        if not outcome.reusable:
            self.close()
        return outcome

    def close(self) -> None:
        """Close the client (and stop the driver's timer)."""
        if self.driver is not None:
            self.driver.close()
        self.smtp.close()

    @property
    def parser(self) -> ReplyParser | None:
        """The reply parser to reuse for the next transaction, if the session has one."""
        return self.driver.parser if self.driver is not None else None


class SessionOpener:
    """Opens and closes sessions to one node; remembers closing sockets for shutdown."""

    def __init__(self, node: RelayNode, cfg: RelayConfig, *, helo_name: str, password: str | None):
        self.node = node
        self._cfg = cfg
        self._helo = helo_name
        self._password = password
        self._tls = tls_context(node)
        self._closing: set[SMTPProtocol] = set()

    def _new_client(self) -> aiosmtplib.SMTP:
        node = self.node
        return aiosmtplib.SMTP(
            hostname=node.host,
            port=node.port,
            local_hostname=self._helo,
            timeout=self._cfg.command_timeout_s,
            use_tls=node.tls == "implicit",
            start_tls=False,  # done by open(), which also keeps hold of the socket
            tls_context=self._tls,
        )

    async def open(
        self, on_step: SessionStep | None = None
    ) -> tuple[aiosmtplib.SMTP, SMTPProtocol | None]:
        """Connect, greeting, EHLO, STARTTLS, EHLO again, AUTH — step by step.

        Not left to ``SMTP.connect()``: when a later step fails it drops its reference to the
        socket, and a TLS socket needs a few loop turns to close; shutdown waits for those.
        ``on_step`` hears each step before it runs; end the session with :meth:`end`.
        """
        step = on_step or _no_step
        smtp = self._new_client()
        proto: SMTPProtocol | None = None
        try:
            step("connect", smtp)
            await smtp.connect(timeout=self._cfg.connect_timeout_s)
            proto = smtp.protocol
            step("ehlo", smtp)
            await smtp.ehlo()
            if self.node.tls == "starttls":
                # Never fall back to plain text on a node configured for STARTTLS (RFC 3207 §4):
                # starttls() raises when the node does not offer it.
                step("starttls", smtp)
                await smtp.starttls()
                step("ehlo", smtp)
                await smtp.ehlo()  # RFC 3207 §4.2: forget what was said before TLS
            if self.node.username is not None:
                step("auth", smtp)
                await smtp.login(self.node.username, self._password or "")
        except BaseException:
            self.forget(smtp, proto)
            raise
        return smtp, proto

    async def end(self, smtp: aiosmtplib.SMTP, proto: SMTPProtocol | None) -> None:
        """QUIT a session from :meth:`open` (a courtesy: a failed goodbye is ignored)."""
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit(timeout=QUIT_TIMEOUT_S)
        self.forget(smtp, proto)

    def forget(self, smtp: aiosmtplib.SMTP, proto: SMTPProtocol | None = None) -> None:
        """Close a session now; remember its protocol so shutdown can wait for the socket."""
        proto = proto or smtp.protocol
        smtp.close()
        if proto is not None and proto.transport is not None:
            if len(self._closing) > 64:
                self._closing = {p for p in self._closing if p.transport is not None}
            self._closing.add(proto)

    def sockets_open(self) -> bool:
        """Whether a socket of a forgotten session is still closing."""
        return any(p.transport is not None for p in self._closing)

    def clear(self) -> None:
        """Stop tracking closing sockets (after shutdown waited for them)."""
        self._closing.clear()
