"""Delivery status notification requests on a relay transaction (RFC 3461), sans-IO.

The relay node (MailU's Postfix) is not where mail is delivered; the provider behind it is. A DSN
request asks the node to report what the provider said: ``NOTIFY=FAILURE,DELAY`` on every
recipient, so a provider's 5xx or its long run of 4xx comes back to the VERP return path as a
notice, and ``NOTIFY=SUCCESS`` too on a sample of messages, so "delivered" (or "relayed", when
the next hop offers no DSN) can be measured. ``ENVID`` carries the job id with its HMAC tag
(the notice proves which job it is about even if the return path were lost); ``RET=HDRS`` keeps
the notices small; ``ORCPT`` names the recipient as the engine sent it.

The parameters are only sent to a node that offers DSN in its EHLO (RFC 3461 §4: a client must
not send them otherwise); :meth:`DsnRequest.mail_options` and :meth:`DsnRequest.rcpt_options`
give the words the relay appends to MAIL FROM and RCPT TO.
"""

from __future__ import annotations

import msgspec

__all__ = ["DsnRequest", "sampled", "xtext"]

#: RFC 3461 §4.4: ENVID is at most 100 characters (of xtext).
MAX_ENVID = 100
_SAMPLE_SCALE = 2**64
#: Fibonacci hashing multiplier (2^64 / golden ratio): spreads consecutive job ids evenly.
_GOLDEN = 0x9E3779B97F4A7C15


def xtext(value: str) -> str:
    """RFC 3461 §4 xtext: printable ASCII except ``+`` and ``=`` as is, the rest as ``+XX``.

    Non-ASCII characters are encoded as their UTF-8 octets (RFC 6533 would use a utf-8 type;
    the relay only sends ORCPT for ASCII addresses, see :meth:`DsnRequest.rcpt_options`).
    """
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (43, 61):  # '!'..'~' but '+' and '='
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def sampled(job_id: int, fraction: float) -> bool:
    """Whether job ``job_id`` is in the ``fraction`` (0–1) sampled for ``NOTIFY=SUCCESS``.

    Deterministic in the job id, so every retry of a job asks the same, and spread evenly over
    consecutive ids (a campaign's jobs are consecutive).
    """
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    spread = (job_id * _GOLDEN) % _SAMPLE_SCALE
    return spread < fraction * _SAMPLE_SCALE


class DsnRequest(msgspec.Struct, frozen=True):
    """What to ask of the relay node about one message's delivery."""

    envid: str  # the signed job id (engine.compose.verp.envid): letters, digits and '-'
    success: bool = False  # NOTIFY=SUCCESS too: a notice when the provider accepted it
    ret: str = "HDRS"  # RET=HDRS: a failure notice quotes the header block, not the body

    def mail_options(self) -> list[str]:
        """``RET`` and ``ENVID`` for MAIL FROM (RFC 3461 §4.3, §4.4)."""
        return [f"RET={self.ret}", f"ENVID={xtext(self.envid)[:MAX_ENVID]}"]

    def rcpt_options(self, recipient: str) -> list[str]:
        """``NOTIFY`` and ``ORCPT`` for RCPT TO (RFC 3461 §4.1, §4.2).

        ORCPT is left out for a non-ASCII address: its ``rfc822`` type is ASCII only, and the
        ``utf-8`` type needs an SMTPUTF8 transaction the node may not run the same way.
        """
        notify = "SUCCESS,FAILURE,DELAY" if self.success else "FAILURE,DELAY"
        options = [f"NOTIFY={notify}"]
        if recipient.isascii():
            options.append(f"ORCPT=rfc822;{xtext(recipient)}")
        return options
