"""Classify what a relay node answered (sans-IO).

One function, :func:`classify_reply`, turns an SMTP reply (or the lack of one) into a
:class:`ReplyVerdict`: the job outcome (RFC 5321 §4.2.1 reply classes), the RFC 3463 enhanced
status code found in the text, and whether the reply means "slow down" — shaping (DESIGN §4)
backs a sender×provider rate off on those.

No I/O and no asyncio here: the relay transaction calls this with the replies it parsed, the tests
call it with strings. Codes and enhanced status codes are named in :mod:`engine.smtp.codes`
(re-exported here for the relay's callers).
"""

from __future__ import annotations

import re

import msgspec

from engine.model import OutcomeKind
from engine.smtp.codes import EnhancedClass, EnhancedSubject, ReplyCode, parse_enhanced_status

__all__ = [
    "EnhancedClass",
    "EnhancedSubject",
    "ReplyCode",
    "ReplyVerdict",
    "classify_reply",
    "local_failure",
    "parse_enhanced_status",
]


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
