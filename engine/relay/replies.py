"""Classify what a relay node answered (sans-IO).

One function, :func:`classify_reply`, turns an SMTP reply (or the lack of one) into a
:class:`ReplyVerdict`: the job outcome (RFC 5321 §4.2.1 reply classes), the RFC 3463 enhanced
status code found in the text, and whether the reply means "slow down" — shaping (DESIGN §4)
backs a sender×provider rate off on those.

No I/O and no asyncio here: the pool calls this with whatever aiosmtplib handed it, the tests call
it with strings.
"""

from __future__ import annotations

import enum
import re

import msgspec

from engine.model import OutcomeKind

__all__ = [
    "EnhancedClass",
    "EnhancedSubject",
    "ReplyCode",
    "ReplyVerdict",
    "classify_reply",
    "local_failure",
    "parse_enhanced_status",
]


class ReplyCode(enum.IntEnum):
    """SMTP reply codes the relay layer acts on (RFC 5321 §4.2.2–4.2.3, RFC 4954, RFC 3207)."""

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
    BAD_SEQUENCE = 503
    AUTH_REQUIRED = 530  # RFC 4954 §6
    AUTH_INVALID = 535  # RFC 4954 §6
    MAILBOX_UNAVAILABLE = 550
    EXCEEDED_STORAGE = 552
    MAILBOX_NAME_INVALID = 553
    TRANSACTION_FAILED = 554


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
    CONTENT = 6
    SECURITY_POLICY = 7


# RFC 3463 §2: class "." subject "." detail, subject and detail 1–3 digits. Servers put it at the
# start of the reply text (RFC 2034 §3), on every line of a multi-line reply; the first one counts.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

# Status codes that mean "you are sending too fast" rather than "this recipient has a problem":
# 4.2.1 is what Gmail answers when a mailbox receives at a rate it will not take (RFC 3463 calls
# it "mailbox disabled", providers use it for rate); 4.7.x is security/policy, used by most
# providers for throttling and temporary reputation blocks.
_THROTTLE_STATUS_PREFIXES = ("4.2.1", "4.7.")
# 4.5.3 "too many recipients" (RFC 3463 §3.6) is about the envelope, not about our rate.
_NOT_THROTTLE_STATUS = frozenset({"4.5.3"})
_THROTTLE_WORDS = re.compile(
    r"too many|rate limit|ratelimit|rate-limit|throttl|try again later|slow down"
    r"|too fast|exceeded .{0,20}(?:rate|limit)|temporarily deferred",
    re.IGNORECASE,
)


class ReplyVerdict(msgspec.Struct, frozen=True):
    """What one reply means for the job and for shaping."""

    kind: OutcomeKind
    reply_code: int | None  # None: no reply at all (refused, timed out, dropped)
    enhanced_status: str | None  # "5.1.1", from the reply text (RFC 3463)
    throttled: bool  # the node or the receiver asked us to slow down
    text: str


def parse_enhanced_status(text: str) -> str | None:
    """Return the RFC 3463 enhanced status code at the start of ``text`` ("4.7.0"), if any."""
    m = _ENHANCED.match(text)
    if m is None:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def _kind_for(code: int | None) -> OutcomeKind:
    if code is None:
        return OutcomeKind.DEFERRED
    if 200 <= code < 300:
        return OutcomeKind.RELAYED
    if 500 <= code < 600:
        return OutcomeKind.FAILED
    # 4xx, and anything outside the reply classes a final reply may have (a stray 3xx, the -1
    # aiosmtplib uses for a malformed line): the node did not take the message; retrying is safe.
    return OutcomeKind.DEFERRED


def _is_throttled(code: int | None, enhanced: str | None, text: str) -> bool:
    if code is None or not 400 <= code < 500:
        return False
    if code == ReplyCode.SERVICE_UNAVAILABLE:
        return True
    if enhanced is not None:
        if enhanced in _NOT_THROTTLE_STATUS:
            return False
        if enhanced.startswith(_THROTTLE_STATUS_PREFIXES):
            return True
    return _THROTTLE_WORDS.search(text) is not None


def classify_reply(code: int | None, text: str) -> ReplyVerdict:
    """Classify a final SMTP reply; ``code=None`` means there was no reply (connection trouble).

    2xx → relayed, 4xx → deferred, 5xx → failed (RFC 5321 §4.2.1); no reply → deferred.
    """
    enhanced = parse_enhanced_status(text) if text else None
    return ReplyVerdict(
        kind=_kind_for(code),
        reply_code=code,
        enhanced_status=enhanced,
        throttled=_is_throttled(code, enhanced, text),
        text=text,
    )


def local_failure(text: str) -> ReplyVerdict:
    """A permanent failure decided here, without a reply (e.g. an address no node can take).

    ``text`` starts with the RFC 3463 code that describes it, like a server reply would.
    """
    return ReplyVerdict(
        kind=OutcomeKind.FAILED,
        reply_code=None,
        enhanced_status=parse_enhanced_status(text),
        throttled=False,
        text=text,
    )
