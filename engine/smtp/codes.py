"""SMTP reply codes and RFC 3463 enhanced status codes: one set of names for the whole engine.

The relay acts on the replies of its node, the inbound classifier reasons about the replies a
bounce quotes, shaping reads what a reply says about a sender's reputation; all three name codes
from here instead of keeping enums of their own. No I/O, no imports from the engine.
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "SYNTAX_REPLY_CODES",
    "EnhancedClass",
    "EnhancedSubject",
    "ReplyClass",
    "ReplyCode",
    "parse_enhanced_status",
]


class ReplyCode(enum.IntEnum):
    """SMTP reply codes the engine acts on (RFC 5321 §4.2.2–4.2.3, RFC 4954, RFC 3207)."""

    SERVICE_READY = 220  # greeting; also "go ahead with TLS" after STARTTLS (RFC 3207 §4)
    CLOSING = 221
    AUTH_SUCCEEDED = 235  # RFC 4954 §6
    OK = 250
    WILL_FORWARD = 251
    START_MAIL_INPUT = 354  # after DATA: send the payload, end with <CRLF>.<CRLF>
    SERVICE_UNAVAILABLE = 421  # the server is closing the channel (RFC 5321 §3.8)
    MAILBOX_BUSY = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    TLS_UNAVAILABLE = 454  # RFC 3207 §4; also "temporary authentication failure" (RFC 4954)
    SYNTAX_ERROR = 500
    SYNTAX_ERROR_IN_PARAMETERS = 501
    COMMAND_NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    PARAMETER_NOT_IMPLEMENTED = 504
    AUTH_REQUIRED = 530  # RFC 4954 §6
    AUTH_INVALID = 535  # RFC 4954 §6
    MAILBOX_UNAVAILABLE = 550
    EXCEEDED_STORAGE = 552
    MAILBOX_NAME_INVALID = 553
    TRANSACTION_FAILED = 554


class ReplyClass(enum.IntEnum):
    """The first digit of an SMTP reply code (RFC 5321 §4.2.1)."""

    POSITIVE_COMPLETION = 2
    POSITIVE_INTERMEDIATE = 3
    TRANSIENT_NEGATIVE = 4
    PERMANENT_NEGATIVE = 5


#: Reply codes that mean the remote server did not understand what was sent (RFC 5321 §4.2.3).
SYNTAX_REPLY_CODES = frozenset(
    {
        ReplyCode.SYNTAX_ERROR,
        ReplyCode.SYNTAX_ERROR_IN_PARAMETERS,
        ReplyCode.COMMAND_NOT_IMPLEMENTED,
        ReplyCode.BAD_SEQUENCE,
        ReplyCode.PARAMETER_NOT_IMPLEMENTED,
    }
)


class EnhancedClass(enum.IntEnum):
    """The first digit of an enhanced status code (RFC 3463 §3.1)."""

    SUCCESS = 2
    PERSISTENT_TRANSIENT = 4
    PERMANENT = 5


class EnhancedSubject(enum.IntEnum):
    """The second digit of an enhanced status code (RFC 3463 §3.2)."""

    OTHER = 0
    ADDRESSING = 1
    MAILBOX = 2
    MAIL_SYSTEM = 3
    NETWORK_ROUTING = 4
    DELIVERY_PROTOCOL = 5
    CONTENT = 6  # media / content (§3.8)
    SECURITY_POLICY = 7  # security or policy (§3.9)


# RFC 3463 §2: class "." subject "." detail, subject and detail 1–3 digits. Servers put it at the
# start of the reply text (RFC 2034 §3), on every line of a multi-line reply; the first one counts.
# A DSN's Status field (RFC 3464 §2.3.4) has the same form, optionally followed by a comment.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def parse_enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of ``text``, normalised ("4.7.0"), or None.

    Leading zeros are dropped ("5.01.001" is "5.1.1"); a fourth field ("5.1.1.1") or a class
    other than 2, 4, 5 is not a status code.
    """
    m = _ENHANCED.match(text)
    if m is None:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
