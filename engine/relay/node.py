"""One relay node: a bounded pool of persistent SMTP sessions, its breaker and its transactions.

A session (:mod:`engine.relay.session`: TCP, STARTTLS or implicit TLS, EHLO, AUTH) is opened
lazily, used by one task at a time for one transaction, and put back for the next message. It is
closed when the node drops it, after ``max_messages_per_connection`` transactions (recycling
spreads load over the node's processes and bounds any server-side per-session state), after a
421, and at shutdown.

A transaction (:mod:`engine.relay.transaction`) is pipelined (RFC 2920) when the node offers
PIPELINING, with the payload in the same write as ``BDAT <size> LAST`` when it also offers
CHUNKING (RFC 3030; Postfix does by default), and one command per round trip otherwise. On a node
that offers DSN, MAIL FROM carries the message's ``RET``/``ENVID`` and each RCPT TO its
``NOTIFY``/``ORCPT`` (RFC 3461, :mod:`engine.relay.dsn`). The transaction's ending decides:

* answered — a :class:`SendResult` classified by :mod:`engine.relay.replies`;
* lost before the payload was handed over — :class:`NodeUnavailable`, so the pool tries the next
  node with the same message (nothing can have been delivered);
* lost after the payload was written — DEFERRED: the node may have queued the message, so it must
  not be claimed relayed, and it is not sent elsewhere right now either; the retry later is the
  at-least-once window DESIGN §3 accepts (the Message-ID is fixed per job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from engine.config import RelayConfig, RelayNode
from engine.errors import RelayError
from engine.model import OutcomeKind
from engine.relay.breaker import BreakerState, CircuitBreaker, Clock
from engine.relay.dsn import DsnRequest
from engine.relay.envelope import build_envelope
from engine.relay.observer import RelayObserver
from engine.relay.results import NodeStatus, SendResult
from engine.relay.session import QUIT_TIMEOUT_S, Session, SessionOpener, SessionStep, describe
from engine.relay.transaction import Ending, Mode, Transaction
from engine.relay.wire import Payload, prepare_payload

__all__ = ["NodePool", "NodeUnavailable", "Payload", "SessionStep", "prepare_payload"]

log = logging.getLogger("engine.relay")

#: An idle session older than this gets a NOOP before reuse; servers drop idle clients
#: (Postfix after 300 s), and finding out at MAIL would cost a retry.
IDLE_CHECK_S = 30.0


class NodeUnavailable(RelayError):
    """The node could not take this message and nothing was handed over: try another node."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"relay node {node}: {message}")
        self.node = node
        self.reason = message


class NodePool:
    """Sessions, breaker and counters of one relay node."""

    #: Pipeline the transaction (RFC 2920) when the node offers PIPELINING. False forces the
    #: command-by-command path: for comparing the two, or for a node whose PIPELINING is broken.
    pipelining: bool = True
    #: With pipelining, send the payload in the MAIL/RCPT write as ``BDAT <size> LAST`` when the
    #: node offers CHUNKING (RFC 3030). False keeps DATA (and its second round trip).
    chunking: bool = True

    def __init__(
        self,
        node: RelayNode,
        cfg: RelayConfig,
        *,
        helo_name: str,
        password: str | None,
        observer: RelayObserver,
        clock: Clock = time.monotonic,
    ) -> None:
        self.node = node
        self.name = node.name
        self._cfg = cfg
        self._observer = observer
        self._clock = clock
        self._sessions = SessionOpener(node, cfg, helo_name=helo_name, password=password)
        self.breaker = CircuitBreaker(
            cfg.breaker_failures, cfg.breaker_cooldown_s, clock=clock, on_change=self._on_breaker
        )
        self._slots = asyncio.Semaphore(node.max_connections)
        self._idle: list[Session] = []  # LIFO: hot sessions stay hot, extra ones age out
        self._open = 0
        self._in_use = 0
        self._shutdown = False
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_health: bool | None = None

    # -- breaker bookkeeping ----------------------------------------------------------------------

    def _on_breaker(self, old: BreakerState, new: BreakerState) -> None:
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(
            level,
            "relay circuit breaker %s",
            new.value,
            extra={"relay": self.name, "from_state": old.value, "error": self.last_error},
        )
        self._observer.breaker_changed(self.name, old, new)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self.breaker.record_failure()
        self._observer.connection_failed(self.name, reason)

    # -- sessions ---------------------------------------------------------------------------------

    async def open_session(
        self, on_step: SessionStep | None = None
    ) -> tuple[aiosmtplib.SMTP, SMTPProtocol | None]:
        """A session opened step by step (see :meth:`SessionOpener.open`), outside the pool.

        ``on_step`` hears each step before it runs; end the session with :meth:`end_session`.
        """
        return await self._sessions.open(on_step)

    async def end_session(self, smtp: aiosmtplib.SMTP, proto: SMTPProtocol | None) -> None:
        """QUIT a session from :meth:`open_session` (a courtesy: a failed goodbye is ignored)."""
        await self._sessions.end(smtp, proto)

    async def _connect(self) -> Session:
        """Open a ready session (TLS and AUTH done) or raise :class:`NodeUnavailable`."""
        self._open += 1
        try:
            smtp, _ = await self._sessions.open()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # OSError covers refused, unreachable, TLS verification (ssl.SSLError) and timeouts.
            self._open -= 1
            reason = f"connect to {self.node.host}:{self.node.port} failed: {describe(exc)}"
            self._failed(reason)
            log.warning("relay connect failed", extra={"relay": self.name, "error": reason})
            raise NodeUnavailable(self.name, reason) from exc
        except BaseException:
            self._open -= 1
            raise
        self._observer.connection_opened(self.name)
        return Session(smtp, self._clock())

    def _discard(self, session: Session, reason: str) -> None:
        if session.driver is not None:
            session.driver.close()
        self._open -= 1
        self._sessions.forget(session.smtp, session.protocol)
        self._observer.connection_closed(self.name, reason)

    async def _quit(self, session: Session, reason: str) -> None:
        # The session is being closed anyway; a failed goodbye changes nothing.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await session.smtp.quit(timeout=QUIT_TIMEOUT_S)
        self._discard(session, reason)

    async def _checkout(self, *, fresh: bool = False) -> tuple[Session, bool]:
        """An idle session (``True``: reused) or, if none or ``fresh``, a new one."""
        while self._idle and not fresh:
            session = self._idle.pop()
            if not session.smtp.is_connected:
                self._discard(session, "lost")
                continue
            if self._clock() - session.last_used > IDLE_CHECK_S:
                try:
                    await session.smtp.noop()
                except (aiosmtplib.SMTPException, OSError):
                    self._discard(session, "idle")
                    continue
            return session, True
        return await self._connect(), False

    async def _checkin(self, session: Session) -> None:
        if not session.smtp.is_connected:
            self._discard(session, "reply")
        elif self._shutdown:
            await self._quit(session, "shutdown")
        elif session.transactions >= self.node.max_messages_per_connection:
            await self._quit(session, "recycled")
        else:
            session.last_used = self._clock()
            self._idle.append(session)

    # -- sending ----------------------------------------------------------------------------------

    async def send(
        self,
        sender: str,
        recipients: list[str],
        payload: Payload,
        dsn: DsnRequest | None = None,
    ) -> SendResult:
        """Run one transaction on this node; :class:`NodeUnavailable` means "try another node".

        ``dsn``: the RFC 3461 parameters to send when the node offers DSN (ignored otherwise).
        """
        if self._shutdown:
            raise NodeUnavailable(self.name, "relay pool is shut down")
        if not self.breaker.allow():
            raise NodeUnavailable(self.name, "circuit breaker open")
        settled = False
        try:
            async with self._slots:
                self._in_use += 1
                try:
                    result = await self._send_once_or_twice(sender, recipients, payload, dsn)
                finally:
                    self._in_use -= 1
            settled = True
            return result
        except NodeUnavailable:
            settled = True
            raise
        finally:
            if not settled:
                # Cancelled or a bug: no verdict on the node, give a half-open probe slot back.
                self.breaker.release()

    async def _send_once_or_twice(
        self, sender: str, recipients: list[str], payload: Payload, dsn: DsnRequest | None
    ) -> SendResult:
        for attempt in (1, 2):
            # The retry after a stale session opens a new one: its idle siblings may be dead too.
            session, reused = await self._checkout(fresh=attempt == 2)
            try:
                tx = self._transaction(session, sender, recipients, payload, dsn)
                outcome = await session.run(tx, self._cfg.command_timeout_s)
            except BaseException:
                self._discard(session, "lost")
                raise
            if outcome.ending is not Ending.ANSWERED:
                self._discard(session, "lost")
                if outcome.stale and reused and attempt == 1:
                    # The node closed an idle session under us; that is not the node failing.
                    continue
                after_payload = outcome.ending is Ending.LOST_AFTER_PAYLOAD
                self._failed(outcome.reason)
                log.warning(
                    "relay session lost",
                    extra={
                        "relay": self.name,
                        "error": outcome.reason,
                        "after_payload": after_payload,
                    },
                )
                if not after_payload:
                    raise NodeUnavailable(self.name, outcome.reason)
                return SendResult(
                    kind=OutcomeKind.DEFERRED,
                    reply_code=None,
                    enhanced_status=None,
                    reply=f"{outcome.reason} after the message was sent; the node may have it",
                    node=self.name,
                )
            result = SendResult.from_verdict(outcome.verdict, self.name, outcome.refused)
            session.transactions += 1
            self.breaker.record_success()
            if result.kind is OutcomeKind.RELAYED:
                self.sent += 1
            await self._checkin(session)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(
        self,
        session: Session,
        sender: str,
        recipients: list[str],
        payload: Payload,
        dsn: DsnRequest | None,
    ) -> Transaction:
        """The transaction for this message in the mode the session's node allows."""
        smtp = session.smtp
        extensions = smtp.esmtp_extensions
        envelope = build_envelope(sender, recipients, payload, extensions, dsn)
        if not (self.pipelining and "pipelining" in extensions):
            mode = Mode.STEPWISE
        elif self.chunking and "chunking" in extensions:
            mode = Mode.CHUNKED
        else:
            mode = Mode.PIPELINED
        return Transaction(envelope, payload, mode, session.parser)

    # -- health, status, shutdown ---------------------------------------------------------------

    async def check(self) -> bool:
        """Probe on a separate session (connect, TLS, AUTH, NOOP, QUIT); feeds the breaker."""
        try:
            smtp, proto = await self.open_session()
            try:
                await smtp.noop()
            finally:
                await self.end_session(smtp, proto)
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = f"health check failed: {describe(exc)}"
            self._failed(reason)
            log.warning("relay health check failed", extra={"relay": self.name, "error": reason})
            return False
        self.breaker.record_success()
        return True

    def status(self) -> NodeStatus:
        """The node as /readyz and /v1/nodes show it."""
        state = self.breaker.state
        return NodeStatus(
            name=self.name,
            host=self.node.host,
            port=self.node.port,
            healthy=state is BreakerState.CLOSED and self.breaker.consecutive_failures == 0,
            breaker=state,
            connections_open=self._open,
            connections_in_use=self._in_use,
            sent=self.sent,
            failures=self.failures,
            last_error=self.last_error,
        )

    async def close(self, timeout: float = 5.0) -> None:
        """QUIT idle sessions, close busy ones when they come back, wait for the sockets."""
        self._shutdown = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(s, "shutdown") for s in idle))
        deadline = self._clock() + timeout
        while self._clock() < deadline and (self._in_use or self._sessions.sockets_open()):
            await asyncio.sleep(0.01)
        self._sessions.clear()
