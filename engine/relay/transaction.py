"""One SMTP client transaction as a state machine, sans-IO (h11-style): bytes in, bytes out.

A :class:`Transaction` is made from an :class:`Envelope` (built by :mod:`engine.relay.envelope`)
and a :class:`~engine.relay.wire.Payload`, in one of three modes of the same machine:

* ``STEPWISE``: MAIL, each RCPT, DATA one round trip each (a node without PIPELINING);
* ``PIPELINED``: MAIL, the RCPTs and DATA in one write (RFC 2920), the payload after the 354;
* ``CHUNKED``: MAIL, the RCPTs, ``BDAT <size> LAST`` and the payload in one write (RFC 3030).

The I/O layer writes what :meth:`Transaction.start` returns, feeds what it reads to
:meth:`Transaction.receive` (which may return bytes to write: the next command, the payload,
RSET), tells it of a dropped connection (:meth:`~Transaction.connection_lost`) or of a reply not
coming in time (:meth:`~Transaction.timed_out`), until :attr:`Transaction.outcome` is set.

Replies are taken in turn as if each had been awaited (RFC 2920 §3.1), so every mode ends the
same ways (:class:`Ending`):

* ``ANSWERED``: the node gave a verdict: the answer to the payload, or a refusal before it (of
  MAIL, of every recipient, of DATA). A refused transaction is ended with RSET so the session can
  carry the next message; a 354 to a refused pipelined group is ended with a lone ``.``.
* ``LOST_BEFORE_PAYLOAD``: the connection failed (dropped, timed out, garbled) before the payload
  was handed over: nothing can have been delivered, the message may go to another node at once.
* ``LOST_AFTER_PAYLOAD``: the connection failed after the payload was written and before its
  answer: the node may have queued the message, so it is neither relayed nor safe to resend now.
  With ``CHUNKED`` the payload goes with the first write, so any loss before a refusal is this.

Every state transition is in :meth:`Transaction._on_reply` and :meth:`Transaction._broken`.
"""

from __future__ import annotations

import enum
from collections import deque
from itertools import repeat

import msgspec

from engine.model import OutcomeKind
from engine.relay.replies import ReplyVerdict, classify_reply, local_failure
from engine.relay.results import RecipientRefusal
from engine.relay.wire import MalformedReply, Payload, Reply, ReplyParser
from engine.smtp.codes import ReplyCode

__all__ = [
    "Ending",
    "Envelope",
    "Mode",
    "Outcome",
    "Transaction",
    "not_relayed",
    "overall",
    "refusal",
]


class Mode(enum.Enum):
    """How the commands of a transaction go on the wire."""

    STEPWISE = "stepwise"  # one command per round trip
    PIPELINED = "pipelined"  # RFC 2920: MAIL, RCPTs, DATA in one write; the payload after 354
    CHUNKED = "chunked"  # RFC 2920 + RFC 3030: MAIL, RCPTs, BDAT LAST and the payload at once


class Ending(enum.Enum):
    """How a transaction ended, which decides what may happen to the message next."""

    ANSWERED = "answered"  # the node's verdict (or a local one) is in Outcome.verdict
    LOST_BEFORE_PAYLOAD = "lost_before_payload"  # nothing handed over: try another node
    LOST_AFTER_PAYLOAD = "lost_after_payload"  # the node may have it: deferred, not resent now


class Outcome(msgspec.Struct, frozen=True):
    """The end of a transaction."""

    ending: Ending
    verdict: ReplyVerdict  # for a lost connection: no reply code, ``reason`` as text
    refused: tuple[RecipientRefusal, ...] = ()  # recipients refused while others were accepted
    reusable: bool = True  # the session can carry the next message
    stale: bool = False  # dropped before any reply: perhaps a session the node closed while idle
    reason: str = ""  # what broke, for a lost connection


class _Await(enum.Enum):
    """What a reply still to come answers; the value names it in messages."""

    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "end of DATA"
    BDAT = "BDAT"
    DOT = "the lone dot"  # ends a refused group's 354 (RFC 2920 §3.1)
    RSET = "RSET"


def refusal(rcpt: str, verdict: ReplyVerdict) -> RecipientRefusal:
    """One recipient refused with ``verdict``."""
    return RecipientRefusal(
        recipient=rcpt,
        kind=verdict.kind,
        reply_code=verdict.reply_code,
        enhanced_status=verdict.enhanced_status,
        reply=verdict.text,
    )


class Envelope(msgspec.Struct, frozen=True):
    """MAIL and RCPT command lines, or the local verdict that nothing can be sent."""

    mail: bytes  # b"MAIL FROM:<...> ...\r\n" (empty when ``settled``)
    recipients: tuple[str, ...]  # those with a RCPT line, in order
    rcpt_lines: tuple[bytes, ...]
    refused: tuple[RecipientRefusal, ...]  # refused here, before anything is written
    settled: ReplyVerdict | None = None  # refused as a whole before anything is written


def not_relayed(reply: Reply, stage: str) -> ReplyVerdict:
    """Classify a reply that refused the transaction before the payload.

    A 2xx where a 250 or 354 was due (a 252 to RCPT, a 250 to DATA) is not a delivery:
    nothing was sent, so it must never come out as RELAYED.
    """
    verdict = classify_reply(reply.code, reply.text)
    if verdict.kind is OutcomeKind.RELAYED:
        verdict = classify_reply(None, f"unexpected reply to {stage}: {reply.code} {reply.text}")
    return verdict


def overall(refused: list[RecipientRefusal]) -> ReplyVerdict:
    """Every recipient was refused: deferred if any may succeed later, else failed."""
    first = next((r for r in refused if r.kind is OutcomeKind.DEFERRED), refused[0])
    if first.reply_code is None:
        return local_failure(first.reply)
    return classify_reply(first.reply_code, first.reply)


_RCPT_OK = (ReplyCode.OK, ReplyCode.WILL_FORWARD)


class Transaction:
    """The client side of one MAIL … payload exchange (see the module docstring)."""

    __slots__ = (
        "_accepted",
        "_envelope",
        "_final",
        "_mode",
        "_out",
        "_parser",
        "_payload",
        "_payload_sent",
        "_pending",
        "_queue",
        "_rcpt",
        "_refusal",
        "_refused",
        "_replied",
        "_reusable",
        "_rset_sent",
        "_seen",
        "outcome",
    )

    def __init__(
        self,
        envelope: Envelope,
        payload: Payload,
        mode: Mode,
        parser: ReplyParser | None = None,
    ) -> None:
        self._envelope = envelope
        self._payload = payload
        self._mode = mode
        self._parser = parser if parser is not None else ReplyParser()
        self._parser.reset()
        self._seen = 0
        self._pending: deque[_Await] = deque()  # written, reply not yet in, oldest first
        self._queue: list[tuple[bytes, _Await]] = []  # STEPWISE: not yet written
        self._out: list[bytes] = []
        self._rcpt = 0  # RCPT replies taken
        self._accepted = 0
        self._refused = list(envelope.refused)
        self._refusal: ReplyVerdict | None = None  # the transaction was refused before the payload
        self._final: ReplyVerdict | None = None  # the answer to the payload
        self._payload_sent = False
        self._replied = False
        self._reusable = True
        self._rset_sent = False
        self.outcome: Outcome | None = None
        if envelope.settled is not None:
            self.outcome = Outcome(Ending.ANSWERED, envelope.settled)
        elif not envelope.recipients:
            refused = tuple(self._refused)
            self.outcome = Outcome(Ending.ANSWERED, overall(self._refused), refused)

    # -- events in ---------------------------------------------------------------------------------

    def start(self) -> bytes:
        """The first write of the transaction (empty if it was settled without the node)."""
        if self.outcome is not None:
            return b""
        env = self._envelope
        rcpt_lines = env.rcpt_lines
        if self._mode is Mode.STEPWISE:
            # Written one by one as the replies come; popped from the end, so in reverse.
            self._queue = [(b"DATA\r\n", _Await.DATA)]
            self._queue.extend((line, _Await.RCPT) for line in reversed(rcpt_lines))
            return self._send(env.mail, _Await.MAIL)
        pending = self._pending
        pending.append(_Await.MAIL)
        pending.extend(repeat(_Await.RCPT, len(rcpt_lines)))
        if self._mode is Mode.CHUNKED:
            body = self._payload.body
            pending.append(_Await.BDAT)
            self._payload_sent = True
            return b"".join((env.mail, *rcpt_lines, b"BDAT %d LAST\r\n" % len(body), body))
        pending.append(_Await.DATA)
        return b"".join((env.mail, *rcpt_lines, b"DATA\r\n"))

    def receive(self, data: bytes) -> bytes:
        """Take bytes read from the node; returns what to write now (often nothing)."""
        if self.outcome is not None:
            return b""
        garbled: MalformedReply | None = None
        try:
            self._parser.feed(data)
        except MalformedReply as exc:
            garbled = exc  # the replies before the bad line still count
        replies = self._parser.replies
        count = len(replies)
        while self._seen < count and self.outcome is None:
            reply = replies[self._seen]
            self._seen += 1
            if self._pending:
                self._on_reply(reply)
            else:
                self._broken(f"unusable reply to {self._stage()}: unexpected {reply.code}")
        if garbled is not None:
            self._broken(f"unusable reply to {self._stage()}: {garbled}")
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def connection_lost(self, cause: str) -> None:
        """The connection dropped (``cause``: "connection closed by the node", …)."""
        stale = not self._replied and self._stage() == _Await.MAIL.value
        self._broken(f"{cause} at {self._stage()}", stale=stale)

    def timed_out(self, seconds: float) -> None:
        """No (further) reply came within ``seconds``."""
        self._broken(f"no reply to {self._stage()} within {seconds:g} s")

    # -- transitions -------------------------------------------------------------------------------

    def _send(self, line: bytes, stage: _Await) -> bytes:
        self._pending.append(stage)
        return line

    def _stage(self) -> str:
        return self._pending[0].value if self._pending else _Await.MAIL.value

    def _on_reply(self, reply: Reply) -> None:
        stage = self._pending.popleft()
        self._replied = True
        code = reply.code
        if stage is _Await.MAIL:
            if code != ReplyCode.OK:
                self._refusal = not_relayed(reply, "MAIL")
        elif stage is _Await.RCPT:
            self._on_rcpt(reply)
        elif stage is _Await.DATA:
            self._on_data(reply)
        elif stage in (_Await.END_OF_DATA, _Await.BDAT):
            if self._refusal is None:
                self._final = classify_reply(code, reply.text)
        elif stage is _Await.RSET and code != ReplyCode.OK:
            self._reusable = False
        # _Await.DOT: the expected refusal of an empty message; nothing to learn.
        if code == ReplyCode.SERVICE_UNAVAILABLE:
            # RFC 5321 §3.8: the node is closing the session; no more replies will come.
            self._reusable = False
            self._answered()
        elif self._queue and self._refusal is None:
            self._out.append(self._send(*self._queue.pop()))
        elif not self._pending:
            self._answered()

    def _on_data(self, reply: Reply) -> None:
        code = reply.code
        if self._refusal is not None:
            if code == ReplyCode.START_MAIL_INPUT:
                # RFC 2920 §3.1: end the message at once; the node refuses it for want of
                # recipients and the session stays usable.
                self._out.append(self._send(b".\r\n", _Await.DOT))
        elif code != ReplyCode.START_MAIL_INPUT:
            self._refusal = not_relayed(reply, "DATA")
        else:
            self._out.append(self._send(self._payload.data, _Await.END_OF_DATA))
            self._payload_sent = True

    def _on_rcpt(self, reply: Reply) -> None:
        recipients = self._envelope.recipients
        rcpt = recipients[self._rcpt]
        self._rcpt += 1
        if self._refusal is not None:
            return  # MAIL was refused: the RCPTs of the group say nothing more
        if reply.code in _RCPT_OK:
            self._accepted += 1
        else:
            verdict = not_relayed(reply, "RCPT")
            self._refused.append(refusal(rcpt, verdict))
            if reply.code == ReplyCode.SERVICE_UNAVAILABLE:
                # The node is closing: the recipients not yet answered share the verdict.
                self._refused.extend(refusal(r, verdict) for r in recipients[self._rcpt :])
                self._refusal = overall(self._refused)
                return
        if self._rcpt == len(recipients) and not self._accepted:
            self._refusal = overall(self._refused)

    def _answered(self) -> None:
        """Every reply due is in (or a 421 ended it): RSET a refused session, or finish."""
        refusal_ = self._refusal
        if refusal_ is not None and self._reusable and not self._rset_sent:
            self._rset_sent = True
            self._out.append(self._send(b"RSET\r\n", _Await.RSET))
            return
        verdict = self._final if self._final is not None else refusal_
        assert verdict is not None
        self._pending.clear()
        self.outcome = Outcome(
            Ending.ANSWERED, verdict, tuple(self._refused), reusable=self._reusable
        )

    def _broken(self, reason: str, *, stale: bool = False) -> None:
        """The reply stream ended (dropped, timed out, garbled) with replies still due."""
        if self.outcome is not None:
            return
        self._reusable = False
        self._out.clear()  # nothing more goes to a session that broke
        if self._final is not None or self._refusal is not None:
            # A verdict came before the break (a refusal followed by a hang-up is a refusal).
            self._answered()
            return
        ending = Ending.LOST_AFTER_PAYLOAD if self._payload_sent else Ending.LOST_BEFORE_PAYLOAD
        self._pending.clear()
        self._queue.clear()
        self.outcome = Outcome(
            ending,
            classify_reply(None, reason),
            reusable=False,
            stale=stale and ending is Ending.LOST_BEFORE_PAYLOAD,
            reason=reason,
        )
