"""The envelope of one relay transaction: MAIL FROM and RCPT TO lines for what the node offers.

Decided before a byte is written: which ESMTP parameters the node's EHLO allows (SMTPUTF8,
SIZE, BODY=8BITMIME, the RFC 3461 DSN words), and which addresses cannot go on a command line
at all (refused locally with the status a server would give). The result feeds
:class:`engine.relay.transaction.Transaction`.

No I/O; it is outside the sans-IO list only because address quoting is aiosmtplib's
(``aiosmtplib.email.quote_address``), so that both the session set-up and the transaction quote
the same way.
"""

from __future__ import annotations

import re
from collections.abc import Container

from aiosmtplib.email import quote_address

from engine.relay.dsn import DsnRequest
from engine.relay.replies import local_failure
from engine.relay.results import RecipientRefusal
from engine.relay.transaction import Envelope, refusal
from engine.relay.wire import Payload

__all__ = ["build_envelope", "quote_mailbox"]

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


def _command(verb: bytes, address: str, encoding: str, options: list[str] | None) -> bytes:
    """``VERB:<address>[ options]<CRLF>``; ValueError if the address is unusable."""
    line = verb + quote_mailbox(address).encode(encoding)
    if options:
        line += (" " + " ".join(options)).encode("ascii")
    return line + b"\r\n"


def build_envelope(
    sender: str,
    recipients: list[str],
    payload: Payload,
    extensions: Container[str],
    dsn: DsnRequest | None = None,
) -> Envelope:
    """The command lines for a node offering ``extensions`` (lower-case EHLO keywords)."""
    options: list[str] = []
    encoding = "ascii"
    if not (sender.isascii() and all(r.isascii() for r in recipients)):
        if "smtputf8" not in extensions:
            # RFC 6531 §3.7.4.1: 553 5.6.7, decided locally since the node cannot take it.
            verdict = local_failure("5.6.7 non-ASCII address and the node does not offer SMTPUTF8")
            return Envelope(b"", (), (), (), settled=verdict)
        options.append("SMTPUTF8")
        encoding = "utf-8"
    if "size" in extensions:
        options.append(f"SIZE={payload.size}")
    if payload.eight_bit and "8bitmime" in extensions:
        options.append("BODY=8BITMIME")
    # RFC 3461 §4: DSN parameters only to a node that offers DSN.
    if dsn is not None and "dsn" not in extensions:
        dsn = None
    if dsn is not None:
        options.extend(dsn.mail_options())
    try:
        mail = _command(b"MAIL FROM:", sender, encoding, options)
    except ValueError as exc:
        verdict = local_failure(f"5.1.7 unusable sender address {sender!r}: {exc}")
        return Envelope(b"", (), (), (), settled=verdict)
    refused: list[RecipientRefusal] = []
    sent: list[str] = []
    lines: list[bytes] = []
    for rcpt in recipients:
        try:
            rcpt_options = dsn.rcpt_options(rcpt) if dsn is not None else None
            lines.append(_command(b"RCPT TO:", rcpt, encoding, rcpt_options))
        except ValueError as exc:
            verdict = local_failure(f"5.1.3 unusable recipient address {rcpt!r}: {exc}")
            refused.append(refusal(rcpt, verdict))
            continue
        sent.append(rcpt)
    return Envelope(mail, tuple(sent), tuple(lines), tuple(refused))
