"""One relay node: a bounded pool of persistent SMTP sessions, its breaker and its transactions.

A session (an ``aiosmtplib.SMTP``: TCP, STARTTLS or implicit TLS, EHLO, AUTH) is opened lazily,
used by one task at a time for one transaction, and put back for the next message. It is closed
when the node drops it, after ``max_messages_per_connection`` transactions (recycling spreads
load over the node's processes and bounds any server-side per-session state), after a 421, and
at shutdown.

A transaction is pipelined (RFC 2920, :mod:`engine.relay.pipeline`: MAIL, RCPTs and DATA in one
write) when the node offers PIPELINING, and sent one command at a time through aiosmtplib when it
does not; both end the same ways. When the node also offers CHUNKING (RFC 3030; Postfix does by
default), the payload goes in the same write as ``BDAT <size> LAST``: one write and one round trip
per message. On a node that offers DSN, MAIL FROM carries the message's ``RET``/``ENVID`` and
each RCPT TO its ``NOTIFY``/``ORCPT`` (RFC 3461, :mod:`engine.relay.dsn`) on both paths. A
transaction ends in one of three ways:

* the node answered — a :class:`SendResult` classified by :mod:`engine.relay.replies`;
* the connection failed before the payload was handed over — :class:`NodeUnavailable`, so the
  pool tries the next node with the same message (nothing can have been delivered);
* the connection failed after the payload was written — DEFERRED: the node may have queued the
  message, so it must not be claimed relayed, and it is not sent elsewhere right now either; the
  retry later is the at-least-once window DESIGN §3 accepts (the Message-ID is fixed per job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import cast

import aiosmtplib
import msgspec
from aiosmtplib.protocol import SMTPProtocol

from engine.config import RelayConfig, RelayNode
from engine.errors import RelayError
from engine.model import OutcomeKind
from engine.relay.breaker import BreakerState, CircuitBreaker, Clock
from engine.relay.dsn import DsnRequest
from engine.relay.observer import RelayObserver
from engine.relay.pipeline import (
    ConnectionLost,
    PipelineError,
    Reply,
    ReplyReader,
    ReplyTimeout,
    quote_mailbox,
)
from engine.relay.replies import ReplyCode, ReplyVerdict, classify_reply, local_failure
from engine.relay.results import NodeStatus, RecipientRefusal, SendResult

__all__ = ["NodePool", "NodeUnavailable", "Payload", "SessionStep", "prepare_payload"]

log = logging.getLogger("engine.relay")

#: An idle session older than this gets a NOOP before reuse; servers drop idle clients
#: (Postfix after 300 s), and finding out at MAIL would cost a retry.
IDLE_CHECK_S = 30.0
#: How long a polite QUIT may take before the socket is just closed.
QUIT_TIMEOUT_S = 2.0

#: Told the name of each step of opening a session ("connect", "ehlo", "starttls", "auth") just
#: before it runs, with the client as it is then: ``engine nodes check`` reports what each step
#: saw, and which one failed, from the same code the daemon connects with.
SessionStep = Callable[[str, aiosmtplib.SMTP], None]

# RFC 5321 §2.3.8 line endings, as aiosmtplib would normalise them, but once per message instead
# of once per node tried.
_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")


class Payload(msgspec.Struct, frozen=True):
    """A message ready for the node: CRLF line endings, as BDAT carries it (RFC 3030)."""

    body: bytes
    eight_bit: bool = False  # has octets > 127: declared BODY=8BITMIME where offered (RFC 6152)

    @property
    def size(self) -> int:
        """Octets as transmitted before dot-stuffing (RFC 1870 SIZE; the BDAT chunk size)."""
        return len(self.body)

    @property
    def data(self) -> bytes:
        """The message for DATA: dot-stuffed and terminated by ``.<CRLF>`` (built per call, for
        nodes without CHUNKING only)."""
        body = self.body
        # RFC 5321 §4.5.2 transparency: with CRLF endings every line start is the start of the
        # body or follows an LF, so a bytes.replace does what a (?m)^\. regex would.
        if b"\n." in body:
            body = body.replace(b"\n.", b"\n..")
        if body.startswith(b"."):
            body = b"." + body
        return body + b".\r\n"


def prepare_payload(message: bytes) -> Payload:
    """Normalise line endings (C-level scans, no Python loop over bytes).

    Engine-built messages are already CRLF, so the rewrite is skipped when three ``count`` scans
    show it would change nothing. Dot-stuffing waits for :attr:`Payload.data`: BDAT needs none.
    """
    crlf = message.count(b"\r\n")
    if crlf == message.count(b"\n") and crlf == message.count(b"\r"):
        body = message
    else:
        body = _LINE_ENDINGS.sub(b"\r\n", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return Payload(body=body, eight_bit=not body.isascii())


class NodeUnavailable(RelayError):
    """The node could not take this message and nothing was handed over: try another node."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"relay node {node}: {message}")
        self.node = node
        self.reason = message


class _Lost(Exception):
    """Internal: the session broke during a transaction."""

    def __init__(self, reason: str, *, stale: bool = False, after_payload: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale  # broke at the very first command: maybe just an idle-closed session
        self.after_payload = after_payload


class _Session:
    __slots__ = ("last_used", "protocol", "reader", "smtp", "transactions")

    def __init__(self, smtp: aiosmtplib.SMTP, now: float) -> None:
        self.smtp = smtp
        self.protocol = smtp.protocol
        self.reader: ReplyReader | None = None  # made at the first pipelined transaction
        self.transactions = 0
        self.last_used = now


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _tls_context(node: RelayNode) -> ssl.SSLContext | None:
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


def _overall(refusals: list[RecipientRefusal]) -> ReplyVerdict:
    """Every recipient was refused: deferred if any may succeed later, else failed."""
    first = next((r for r in refusals if r.kind is OutcomeKind.DEFERRED), refusals[0])
    if first.reply_code is None:
        return local_failure(first.reply)
    return classify_reply(first.reply_code, first.reply)


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
        self._helo = helo_name
        self._password = password
        self._observer = observer
        self._clock = clock
        self._tls = _tls_context(node)
        self.breaker = CircuitBreaker(
            cfg.breaker_failures, cfg.breaker_cooldown_s, clock=clock, on_change=self._on_breaker
        )
        self._slots = asyncio.Semaphore(node.max_connections)
        self._idle: list[_Session] = []  # LIFO: hot sessions stay hot, extra ones age out
        self._closing: set[SMTPProtocol] = set()
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

    def _new_client(self) -> aiosmtplib.SMTP:
        node = self.node
        return aiosmtplib.SMTP(
            hostname=node.host,
            port=node.port,
            local_hostname=self._helo,
            timeout=self._cfg.command_timeout_s,
            use_tls=node.tls == "implicit",
            start_tls=False,  # done by open_session, which also keeps hold of the socket
            tls_context=self._tls,
        )

    async def open_session(
        self, on_step: SessionStep | None = None
    ) -> tuple[aiosmtplib.SMTP, SMTPProtocol | None]:
        """Connect, greeting, EHLO, STARTTLS, EHLO again, AUTH — step by step.

        Not left to ``SMTP.connect()``: when a later step fails it drops its reference to the
        socket, and a TLS socket needs a few loop turns to close; shutdown waits for those.
        ``on_step`` hears each step before it runs; end the session with :meth:`end_session`.
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
            self._forget(smtp, proto)
            raise
        return smtp, proto

    async def end_session(self, smtp: aiosmtplib.SMTP, proto: SMTPProtocol | None) -> None:
        """QUIT a session from :meth:`open_session` (a courtesy: a failed goodbye is ignored)."""
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await smtp.quit(timeout=QUIT_TIMEOUT_S)
        self._forget(smtp, proto)

    async def _connect(self) -> _Session:
        """Open a ready session (TLS and AUTH done) or raise :class:`NodeUnavailable`."""
        self._open += 1
        try:
            smtp, _ = await self.open_session()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # OSError covers refused, unreachable, TLS verification (ssl.SSLError) and timeouts.
            self._open -= 1
            reason = f"connect to {self.node.host}:{self.node.port} failed: {_describe(exc)}"
            self._failed(reason)
            log.warning("relay connect failed", extra={"relay": self.name, "error": reason})
            raise NodeUnavailable(self.name, reason) from exc
        except BaseException:
            self._open -= 1
            raise
        self._observer.connection_opened(self.name)
        return _Session(smtp, self._clock())

    def _forget(self, smtp: aiosmtplib.SMTP, proto: SMTPProtocol | None = None) -> None:
        """Close a session now; remember its protocol so shutdown can wait for the socket."""
        proto = proto or smtp.protocol
        smtp.close()
        if proto is not None and proto.transport is not None:
            if len(self._closing) > 64:
                self._closing = {p for p in self._closing if p.transport is not None}
            self._closing.add(proto)

    def _discard(self, session: _Session, reason: str) -> None:
        self._open -= 1
        self._forget(session.smtp, session.protocol)
        self._observer.connection_closed(self.name, reason)

    async def _quit(self, session: _Session, reason: str) -> None:
        # The session is being closed anyway; a failed goodbye changes nothing.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await session.smtp.quit(timeout=QUIT_TIMEOUT_S)
        self._discard(session, reason)

    async def _checkout(self, *, fresh: bool = False) -> tuple[_Session, bool]:
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

    async def _checkin(self, session: _Session) -> None:
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
                result = await self._transact(session, sender, recipients, payload, dsn)
            except _Lost as lost:
                self._discard(session, "lost")
                if lost.stale and reused and attempt == 1:
                    # The node closed an idle session under us; that is not the node failing.
                    continue
                self._failed(lost.reason)
                log.warning(
                    "relay session lost",
                    extra={
                        "relay": self.name,
                        "error": lost.reason,
                        "after_payload": lost.after_payload,
                    },
                )
                if lost.after_payload:
                    return SendResult(
                        kind=OutcomeKind.DEFERRED,
                        reply_code=None,
                        enhanced_status=None,
                        reply=f"{lost.reason} after the message was sent; the node may have it",
                        node=self.name,
                    )
                raise NodeUnavailable(self.name, lost.reason) from lost
            except BaseException:
                self._discard(session, "lost")
                raise
            session.transactions += 1
            self.breaker.record_success()
            if result.kind is OutcomeKind.RELAYED:
                self.sent += 1
            await self._checkin(session)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transact(
        self,
        session: _Session,
        sender: str,
        recipients: list[str],
        payload: Payload,
        dsn: DsnRequest | None = None,
    ) -> SendResult:
        smtp = session.smtp
        options: list[str] = []
        encoding = "ascii"
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            if not smtp.supports_extension("smtputf8"):
                # RFC 6531 §3.7.4.1: 553 5.6.7, decided locally since the node cannot take it.
                return SendResult.from_verdict(
                    local_failure("5.6.7 non-ASCII address and the node does not offer SMTPUTF8"),
                    self.name,
                )
            options.append("SMTPUTF8")
            encoding = "utf-8"
        if smtp.supports_extension("size"):
            options.append(f"SIZE={payload.size}")
        if payload.eight_bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        # RFC 3461 §4: DSN parameters only to a node that offers DSN.
        if dsn is not None and not smtp.supports_extension("dsn"):
            dsn = None
        if dsn is not None:
            options.extend(dsn.mail_options())

        if self.pipelining and smtp.supports_extension("pipelining"):
            return await self._transact_pipelined(
                session, sender, recipients, options, encoding, payload, dsn
            )

        verdict = await self._mail(smtp, sender, options, encoding)
        if verdict is not None:
            return await self._abort(smtp, verdict)

        refused = await self._rcpts(smtp, recipients, encoding, dsn)
        if len(refused) == len(recipients) or not smtp.is_connected:
            # Nobody to send to, or a 421 closed the session half-way through the recipients.
            return await self._abort(smtp, _overall(refused), tuple(refused))

        verdict, complete = await self._data(smtp, payload)
        if not complete:
            return await self._abort(smtp, verdict, tuple(refused))
        return SendResult.from_verdict(verdict, self.name, tuple(refused))

    # -- the pipelined transaction (RFC 2920) -----------------------------------------------------

    async def _transact_pipelined(
        self,
        session: _Session,
        sender: str,
        recipients: list[str],
        options: list[str],
        encoding: str,
        payload: Payload,
        dsn: DsnRequest | None = None,
    ) -> SendResult:
        """MAIL, every RCPT and DATA in one write, their replies read in order, then the payload.

        The outcomes are those of the command-by-command path: it is evaluated as if each reply
        had been awaited in turn, so a refusal followed by a hang-up is still a refusal, and a
        hang-up before the 354 is still "nothing handed over". With CHUNKING the payload goes
        in the same write (``BDAT <size> LAST``): see :meth:`_chunked_replies`.
        """
        try:
            group = [b"MAIL FROM:" + _mailbox(sender, encoding, options)]
        except ValueError as exc:
            verdict = local_failure(f"5.1.7 unusable sender address {sender!r}: {exc}")
            return SendResult.from_verdict(verdict, self.name)
        refused: list[RecipientRefusal] = []
        sent: list[str] = []
        for rcpt in recipients:
            try:
                rcpt_options = dsn.rcpt_options(rcpt) if dsn is not None else None
                group.append(b"RCPT TO:" + _mailbox(rcpt, encoding, rcpt_options))
            except ValueError as exc:
                verdict = local_failure(f"5.1.3 unusable recipient address {rcpt!r}: {exc}")
                refused.append(_refusal(rcpt, verdict))
                continue
            sent.append(rcpt)
        if not sent:
            return SendResult.from_verdict(_overall(refused), self.name, tuple(refused))
        smtp = session.smtp
        chunked = self.chunking and smtp.supports_extension("chunking")
        if chunked:
            body = payload.body
            group.append(b"BDAT %d LAST\r\n" % len(body))
            group.append(body)
        else:
            group.append(b"DATA\r\n")

        proto = smtp.protocol
        if proto is None or proto.transport is None or proto.transport.is_closing():
            raise _Lost("connection lost at MAIL", stale=True)
        transport = cast(asyncio.Transport, proto.transport)  # TCP or TLS: it reads and writes
        reader = session.reader
        if reader is None or reader.inner is not proto:
            reader = session.reader = ReplyReader(proto, asyncio.get_running_loop())
        reader.begin()
        # The reader owns the transport until the last reply of this transaction is in; it is
        # handed back before anything else (RSET, the next message, QUIT) talks on the session.
        transport.set_protocol(reader)
        try:
            transport.write(b"".join(group))
            if chunked:
                verdict, complete, close = await self._chunked_replies(reader, sent, refused)
            else:
                verdict, complete, close = await self._pipelined_replies(
                    transport, reader, sent, refused, payload
                )
        finally:
            transport.set_protocol(proto)
        if close:
            smtp.close()  # a 421, or a reply stream that cannot be trusted any more
        if not complete:
            return await self._abort(smtp, verdict, tuple(refused))
        return SendResult.from_verdict(verdict, self.name, tuple(refused))

    async def _pipelined_replies(
        self,
        transport: asyncio.Transport,
        reader: ReplyReader,
        sent: list[str],
        refused: list[RecipientRefusal],
        payload: Payload,
    ) -> tuple[ReplyVerdict, bool, bool]:
        """Read the group's replies, send the payload after a 354; (verdict, complete, close).

        ``refused`` gets the recipients the node refused. Raises :class:`_Lost` like the
        command-by-command path.
        """
        timeout = self._cfg.command_timeout_s
        n = len(sent)
        broke = await reader.wait(n + 2, timeout)
        replies = reader.replies
        verdict = self._envelope(replies, sent, refused, broke)
        if verdict is not None:
            # Refused before the payload. The group's remaining replies must be consumed before
            # the session can be reset and reused; a 354 among them is ended with a lone "."
            # (RFC 2920 §3.1), which the node rejects for want of recipients.
            close = broke is not None or any(
                r.code == ReplyCode.SERVICE_UNAVAILABLE for r in replies
            )
            if not close and replies[n + 1].code == ReplyCode.START_MAIL_INPUT:
                transport.write(b".\r\n")
                close = await reader.wait(n + 3, timeout) is not None
            return verdict, False, close
        start = replies[n + 1]
        if start.code != ReplyCode.START_MAIL_INPUT:
            verdict = _not_relayed(start, "DATA")
            return verdict, False, start.code == ReplyCode.SERVICE_UNAVAILABLE
        transport.write(payload.data)
        broke = await reader.wait(n + 3, timeout)
        if broke is not None:
            raise _Lost(f"{broke} at end of DATA", after_payload=True)
        final = replies[n + 2]
        return (
            classify_reply(final.code, final.text),
            True,
            final.code == ReplyCode.SERVICE_UNAVAILABLE,
        )

    async def _chunked_replies(
        self, reader: ReplyReader, sent: list[str], refused: list[RecipientRefusal]
    ) -> tuple[ReplyVerdict, bool, bool]:
        """The replies to MAIL, the RCPTs and ``BDAT LAST``; (verdict, complete, close).

        The payload is already written, so only a refusal of MAIL or of every recipient proves
        that nothing was delivered. Any reply missing before the final one is the "after the
        payload" case: the node may have queued the message and not yet flushed its replies
        (they come in one burst after the last chunk), so the result is DEFERRED, never a retry
        on another node. The idle-session case stays cheap: a session idle for long is checked
        with NOOP before reuse, and one found closed is never written to.
        """
        n = len(sent)
        broke = await reader.wait(n + 2, self._cfg.command_timeout_s)
        replies = reader.replies
        known = len(refused)  # refused locally, before anything was written
        try:
            # A refusal of MAIL, or of every recipient (a 421 among them counts for the rest),
            # settles it even if the stream broke after; any other missing reply does not.
            verdict = self._envelope(replies, sent, refused, broke, last="BDAT")
        except _Lost as lost:
            del refused[known:]
            raise _Lost(lost.reason, after_payload=True) from None
        if verdict is not None:
            # The node answers the BDAT too (a 5xx for want of recipients): consumed with the
            # rest, so the session can be reset and reused unless the stream broke.
            close = broke is not None or any(
                r.code == ReplyCode.SERVICE_UNAVAILABLE for r in replies
            )
            return verdict, False, close
        final = replies[n + 1]
        return (
            classify_reply(final.code, final.text),
            True,
            final.code == ReplyCode.SERVICE_UNAVAILABLE,
        )

    def _envelope(
        self,
        replies: list[Reply],
        sent: list[str],
        refused: list[RecipientRefusal],
        broke: PipelineError | None,
        *,
        last: str = "DATA",
    ) -> ReplyVerdict | None:
        """The replies to MAIL and RCPTs, taken in turn: None to go on to DATA, else the refusal.

        Raises :class:`_Lost` where the command-by-command path would have lost the connection:
        at the first reply that did not come, unless an earlier one already ended the transaction
        (``last`` names the command after the RCPTs whose reply is due).
        """
        if not replies:
            raise self._lost_at("MAIL", broke, stale=isinstance(broke, ConnectionLost))
        mail = replies[0]
        if mail.code != ReplyCode.OK:
            return _not_relayed(mail, "MAIL")
        accepted = 0
        for i, rcpt in enumerate(sent, 1):
            if i >= len(replies):
                raise self._lost_at("RCPT", broke)
            reply = replies[i]
            if reply.code in (ReplyCode.OK, ReplyCode.WILL_FORWARD):
                accepted += 1
                continue
            verdict = _not_relayed(reply, "RCPT")
            refused.append(_refusal(rcpt, verdict))
            if reply.code == ReplyCode.SERVICE_UNAVAILABLE:
                # RFC 5321 §3.8: the node is closing the session; the others share the verdict.
                refused.extend(_refusal(r, verdict) for r in sent[i:])
                return _overall(refused)
        if not accepted:
            return _overall(refused)
        if len(replies) < len(sent) + 2:
            raise self._lost_at(last, broke)
        return None

    def _lost_at(self, stage: str, broke: PipelineError | None, *, stale: bool = False) -> _Lost:
        if isinstance(broke, ReplyTimeout):
            return _Lost(f"no reply to {stage} within {self._cfg.command_timeout_s:g} s")
        if isinstance(broke, ConnectionLost):
            return _Lost(f"{broke} at {stage}", stale=stale)
        return _Lost(f"unusable reply to {stage}: {broke}")

    async def _abort(
        self,
        smtp: aiosmtplib.SMTP,
        verdict: ReplyVerdict,
        refused: tuple[RecipientRefusal, ...] = (),
    ) -> SendResult:
        """End a refused transaction with RSET so the session can carry the next message."""
        if smtp.is_connected:
            try:
                await smtp.rset()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()  # not reusable; _checkin discards it
        return SendResult.from_verdict(verdict, self.name, refused)

    async def _mail(
        self, smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str
    ) -> ReplyVerdict | None:
        """MAIL FROM (RFC 5321 §4.1.1.2); None when accepted, else the refusal."""
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            return _not_relayed(Reply(exc.code, exc.message), "MAIL")
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _Lost(f"connection lost at MAIL: {_describe(exc)}", stale=True) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise _Lost(f"no reply to MAIL within {self._cfg.command_timeout_s:g} s") from exc
        except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
            return local_failure(f"5.1.7 unusable sender address {sender!r}: {exc}")
        return None

    async def _rcpts(
        self,
        smtp: aiosmtplib.SMTP,
        recipients: list[str],
        encoding: str,
        dsn: DsnRequest | None = None,
    ) -> list[RecipientRefusal]:
        """RCPT TO per recipient (RFC 5321 §4.1.1.3); returns the refused ones."""
        refused: list[RecipientRefusal] = []
        for i, rcpt in enumerate(recipients):
            try:
                options = dsn.rcpt_options(rcpt) if dsn is not None else None
                await smtp.rcpt(rcpt, options=options, encoding=encoding)
                continue
            except aiosmtplib.SMTPRecipientRefused as exc:
                verdict = _not_relayed(Reply(exc.code, exc.message), "RCPT")
            except aiosmtplib.SMTPServerDisconnected as exc:
                raise _Lost(f"connection lost at RCPT: {_describe(exc)}") from exc
            except aiosmtplib.SMTPTimeoutError as exc:
                raise _Lost(f"no reply to RCPT within {self._cfg.command_timeout_s:g} s") from exc
            except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
                verdict = local_failure(f"5.1.3 unusable recipient address {rcpt!r}: {exc}")
            refused.append(_refusal(rcpt, verdict))
            if not smtp.is_connected:
                # 421 (RFC 5321 §3.8): the node closed the session; the others share the verdict.
                refused.extend(_refusal(r, verdict) for r in recipients[i + 1 :])
                break
        return refused

    async def _data(self, smtp: aiosmtplib.SMTP, payload: Payload) -> tuple[ReplyVerdict, bool]:
        """DATA, the payload, the final reply (RFC 5321 §4.1.1.4); ``True`` if it got that far.

        Done by hand instead of ``SMTP.data()`` to know whether the 354 came: a connection lost
        before it is safe to retry elsewhere, one lost after the payload is not.
        """
        try:
            start = await smtp.execute_command(b"DATA")
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _Lost(f"connection lost at DATA: {_describe(exc)}") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise _Lost(f"no reply to DATA within {self._cfg.command_timeout_s:g} s") from exc
        if start.code != ReplyCode.START_MAIL_INPUT:
            return _not_relayed(Reply(start.code, start.message), "DATA"), False
        proto = smtp.protocol
        if proto is None:
            raise _Lost("connection lost at DATA")
        try:
            proto.write(payload.data)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _Lost(f"connection lost at DATA: {_describe(exc)}") from exc
        try:
            final = await proto.read_response(timeout=self._cfg.command_timeout_s)
        except aiosmtplib.SMTPTimeoutError as exc:
            smtp.close()
            raise _Lost(
                f"no reply to end of DATA within {self._cfg.command_timeout_s:g} s",
                after_payload=True,
            ) from exc
        except aiosmtplib.SMTPException as exc:  # disconnected, or a garbled reply
            smtp.close()
            raise _Lost(
                f"connection lost at end of DATA: {_describe(exc)}", after_payload=True
            ) from exc
        if final.code == ReplyCode.SERVICE_UNAVAILABLE:
            smtp.close()  # RFC 5321 §3.8: the node is closing the session
        return classify_reply(final.code, final.message), True

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
            reason = f"health check failed: {_describe(exc)}"
            self._failed(reason)
            log.warning("relay health check failed", extra={"relay": self.name, "error": reason})
            return False
        self.breaker.record_success()
        return True

    def status(self) -> NodeStatus:
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
        while self._clock() < deadline and (
            self._in_use or any(p.transport is not None for p in self._closing)
        ):
            await asyncio.sleep(0.01)
        self._closing.clear()


def _no_step(step: str, smtp: aiosmtplib.SMTP) -> None:
    """The daemon's sessions report no steps."""


def _mailbox(address: str, encoding: str, options: list[str] | None = None) -> bytes:
    """``<address>[ options]<CRLF>`` for MAIL FROM / RCPT TO; ValueError if unusable."""
    line = quote_mailbox(address).encode(encoding)
    if options:
        line += (" " + " ".join(options)).encode("ascii")
    return line + b"\r\n"


def _not_relayed(reply: Reply, stage: str) -> ReplyVerdict:
    """Classify a reply that refused the transaction before the payload.

    A 2xx where a 250 or 354 was due (a 252 to RCPT, a 250 to DATA) is not a delivery:
    nothing was sent, so it must never come out as RELAYED.
    """
    verdict = classify_reply(reply.code, reply.text)
    if verdict.kind is OutcomeKind.RELAYED:
        verdict = classify_reply(None, f"unexpected reply to {stage}: {reply.code} {reply.text}")
    return verdict


def _refusal(rcpt: str, verdict: ReplyVerdict) -> RecipientRefusal:
    return RecipientRefusal(
        recipient=rcpt,
        kind=verdict.kind,
        reply_code=verdict.reply_code,
        enhanced_status=verdict.enhanced_status,
        reply=verdict.text,
    )
