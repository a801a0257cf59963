"""ESMTP PIPELINING (RFC 2920): read the replies to a group of commands sent in one write.

aiosmtplib keeps one response waiter per command and drops whatever arrives while no command is
waiting, so it cannot read the replies to ``MAIL``, ``RCPT``… ``DATA`` sent together. The relay
keeps aiosmtplib for connect, EHLO, STARTTLS, AUTH and RSET/NOOP/QUIT, and for the transaction
phase hands the session's transport to a :class:`ReplyReader` (``transport.set_protocol``),
giving it back when the transaction ends.

Why a protocol swap and not a parser fed from aiosmtplib's buffer: the swap uses only the public
transport API (asyncio and uvloop, plain and TLS transports alike), whereas reading replies out of
``SMTPProtocol`` would depend on its private buffer and waiter flags, which change between
releases. The reader forwards connection loss and flow control to aiosmtplib's protocol, so the
``SMTP`` object sees a drop during the transaction exactly as it would have seen it itself.

:class:`ReplyParser` is the sans-IO part (bytes in, :class:`Reply` out) and is tested on its own.
"""

from __future__ import annotations

import asyncio
import re

import msgspec
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import SMTPProtocol

from engine.errors import RelayError

__all__ = [
    "ConnectionLost",
    "MalformedReply",
    "PipelineError",
    "Reply",
    "ReplyParser",
    "ReplyReader",
    "ReplyTimeout",
    "quote_mailbox",
]

#: RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; servers put more in EHLO texts, so this
#: is aiosmtplib's bound, which is what the command-by-command path accepts too.
MAX_LINE = 8192
#: A whole (multiline) reply; bounds memory against a server streaming continuation lines.
MAX_REPLY = MAX_LINE * 4

# A dot-atom mailbox with a plain domain: what nearly every envelope address is. For these
# ``aiosmtplib.email.quote_address`` (``email.utils.parseaddr``, slow pure Python) returns the
# address unchanged, so it is skipped; anything else goes through it.
_SIMPLE_MAILBOX = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*",
    re.ASCII,
)
# What aiosmtplib refuses in any command argument: a CR or LF would inject a command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def quote_mailbox(address: str) -> str:
    """``<address>`` for a MAIL/RCPT command, as aiosmtplib would quote it.

    Raises ValueError for an address that cannot go on a command line safely.
    """
    if _SIMPLE_MAILBOX.fullmatch(address):
        return f"<{address}>"
    quoted = quote_address(address)
    if _CONTROL.search(quoted):
        raise ValueError(f"address {address!r} contains a control character")
    return quoted


class PipelineError(RelayError):
    """The reply stream of a pipelined transaction broke; the session cannot be reused."""


class ConnectionLost(PipelineError):
    """The node closed the connection (or it dropped) before all replies came."""


class ReplyTimeout(PipelineError):
    """No reply (or no further reply) within the command timeout."""


class MalformedReply(PipelineError):
    """A reply line that is not ``NNN[ -]text`` or is too long; the stream cannot be trusted."""


class Reply(msgspec.Struct, frozen=True):
    """One SMTP reply: the code and the text (continuation lines joined with ``\\n``)."""

    code: int
    text: str


class ReplyParser:
    """Sans-IO: feed bytes as they arrive, collect complete replies in order (RFC 5321 §4.2)."""

    __slots__ = ("_buffer", "_lines", "replies")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # text of the continuation lines of the reply being read
        self.replies: list[Reply] = []

    def reset(self) -> None:
        self._buffer.clear()
        self._lines.clear()
        self.replies.clear()

    def feed(self, data: bytes) -> int:
        """Parse what is complete in ``data``; returns how many replies are known now.

        Raises :class:`MalformedReply`; the parser is then unusable until :meth:`reset`.
        """
        buf = self._buffer
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) != -1:
            line = bytes(buf[start:end])
            start = end + 1
            self._line(line)
        del buf[:start]
        if len(buf) > MAX_LINE:
            raise MalformedReply("reply line too long")
        return len(self.replies)

    def _line(self, line: bytes) -> None:
        if len(line) > MAX_LINE:
            raise MalformedReply("reply line too long")
        code = line[:3]
        sep = line[3:4]
        if not (code.isdigit() and len(code) == 3) or sep not in (b" ", b"-", b"\r", b""):
            text = line.decode("utf-8", "replace")
            raise MalformedReply(f"malformed reply line: {text[:80]!r}")
        self._lines.append(line[4:].strip(b" \t\r"))
        if sep == b"-":
            if sum(map(len, self._lines)) > MAX_REPLY:
                raise MalformedReply("reply too long")
            return
        text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
        self._lines.clear()
        self.replies.append(Reply(int(code), text))


class ReplyReader(asyncio.Protocol):
    """Stands in for aiosmtplib's protocol on a transport during a pipelined transaction.

    Owned by one session and reused for each of its transactions (:meth:`begin`). Connection
    loss, EOF and flow control are passed on to ``inner`` so the ``SMTP`` object stays truthful.
    """

    def __init__(self, inner: SMTPProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self._loop = loop
        self.parser = ReplyParser()
        self.replies = self.parser.replies
        self._error: PipelineError | None = None
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._progress_at = 0.0

    def begin(self) -> None:
        """Start a transaction: forget the replies and any leftover bytes of the last one."""
        self.parser.reset()
        self._error = None

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        try:
            count = self.parser.feed(data)
        except MalformedReply as exc:
            self._fail(exc)
            return
        self._progress_at = self._loop.time()
        waiter = self._waiter
        if waiter is not None and count >= self._want and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("connection closed by the node"))
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed by the node"
        self._fail(ConnectionLost(reason))
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- waiting ----------------------------------------------------------------------------------

    def _fail(self, exc: PipelineError) -> None:
        if self._error is None:
            self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_timeout(self) -> None:
        # One timer per wait, re-armed lazily: each reply restarts the clock (the same budget the
        # command-by-command path gives every reply) without a cancel/reschedule per reply.
        idle = self._loop.time() - self._progress_at
        if idle >= self._timeout:
            self._fail(ReplyTimeout(f"no reply within {self._timeout:g} s"))
        else:
            self._timer = self._loop.call_at(self._progress_at + self._timeout, self._check_timeout)

    async def wait(self, count: int, timeout: float) -> PipelineError | None:
        """Wait until ``count`` replies of this transaction are in; returns why not, if not.

        Never raises for the stream breaking: the caller decides from the replies that did
        come (a refusal followed by a hang-up is still a refusal).
        """
        if len(self.replies) >= count or self._error is not None:
            return self._error if len(self.replies) < count else None
        self._want = count
        self._timeout = timeout
        self._progress_at = self._loop.time()
        self._waiter = self._loop.create_future()
        self._timer = self._loop.call_at(self._progress_at + timeout, self._check_timeout)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return self._error if len(self.replies) < count else None
