"""The structs that cross the shaping boundary: requests, decisions, delivery signals, providers.

The daemon's worker builds :class:`ShapeRequest` values from a claimed batch, gets one
:class:`ShapeDecision` back per request, and later reports what happened as
:class:`DeliverySignal` values. Nothing here does I/O.
"""

from __future__ import annotations

import enum

import msgspec


class Level(enum.StrEnum):
    """A level of the limit hierarchy (DESIGN §4), in the order a request meets them."""

    PAUSED = "paused"  # the sender is paused (held by the dispatcher, before any other level)
    TENANT = "tenant"
    SENDER_DOMAIN = "sender_domain"
    SENDER = "sender"
    PROVIDER = "provider"  # sender x receiving provider, the AIMD-adapted rate
    WARMUP = "warmup"  # the warm-up plan's daily cap for sender x provider
    NODE = "node"  # relay node


#: Wire codes of the levels inside the Lua scripts (1-based; 0 means "allowed").
LEVEL_CODES: dict[Level, int] = {level: i + 1 for i, level in enumerate(Level)}
LEVEL_BY_CODE: dict[int, Level] = {code: level for level, code in LEVEL_CODES.items()}


class ShapeRequest(msgspec.Struct, frozen=True):
    """One message that wants to go now.

    Give either ``provider`` (a name from :class:`ProviderResolver`, e.g. "gmail") or
    ``recipient_domain``; the shaper resolves the latter itself (cached, never blocking on DNS
    failures) and reports the provider in the decision.
    """

    tenant_id: str
    sender: str  # the envelope / From address, e.g. "news@shop.example"
    provider: str = ""
    node: str | None = None  # relay node, when the caller already chose one
    recipient_domain: str = ""

    @property
    def sender_domain(self) -> str:
        return sender_domain(self.sender)


class ShapeDecision(msgspec.Struct, frozen=True):
    """Whether a request may go now; if not, when to retry it and which level held it."""

    allowed: bool
    retry_after_s: float = 0.0
    level: Level | None = None
    provider: str = ""

    @classmethod
    def allow(cls) -> ShapeDecision:
        return _ALLOWED


_ALLOWED = ShapeDecision(allowed=True)


class SignalKind(enum.StrEnum):
    """What a delivery attempt, bounce or complaint says about a sender x provider."""

    DELIVERED = "delivered"  # 2xx: clean, lets the rate grow
    DEFERRED = "deferred"  # 4xx not about throttling, timeouts
    THROTTLED = "throttled"  # 421 / 4.7.x "slow down": the strongest backoff signal
    BLOCKED = "blocked"  # 5.7.x policy/reputation rejection
    HARD_BOUNCE = "hard_bounce"  # 5xx unknown user etc., at RCPT or as a later DSN
    SOFT_BOUNCE = "soft_bounce"  # asynchronous DSN with a 4.x.x status
    COMPLAINT = "complaint"  # ARF feedback-loop report


#: Kinds that count as one message sent in the reputation window (the denominator of the rates).
ATTEMPT_KINDS = frozenset(
    {SignalKind.DELIVERED, SignalKind.HARD_BOUNCE, SignalKind.SOFT_BOUNCE, SignalKind.BLOCKED}
)


class DeliverySignal(msgspec.Struct, frozen=True):
    """Feedback for shaping: one relay outcome, bounce or complaint of a sender x provider.

    A hard bounce found at RCPT time is one signal (``HARD_BOUNCE``), not a delivery plus a
    bounce; an asynchronous DSN or a complaint arrives later as its own signal with ``attempt``
    false so the message is not counted twice in the denominator.
    """

    tenant_id: str
    sender: str
    provider: str
    kind: SignalKind
    reply_code: int | None = None
    enhanced_status: str | None = None
    attempt: bool = True  # False for bounces/complaints about a message already counted


class Provider(msgspec.Struct, frozen=True):
    """A receiving provider: the group whose limits apply to a recipient domain."""

    name: str
    rate_per_s: float  # ceiling per sender x provider; AIMD moves below it
    max_connections: int
    max_messages_per_connection: int
    source: str = "table"  # config | table | mx (unknown MX, own group) | fallback (DNS failed)


def sender_domain(address: str) -> str:
    """The domain part of a sender address, lower-cased ("" when there is no @)."""
    return address.rpartition("@")[2].lower()
