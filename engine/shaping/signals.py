"""Turn relay outcomes into shaping signals, sans-IO (RFC 3463 enhanced status classes).

The relay layer already says whether a reply means "slow down" (``throttled``: 421, 4.7.x,
"too many", …); this adds what the rest means for a sender's reputation.
"""

from __future__ import annotations

from engine.model import OutcomeKind
from engine.shaping.model import DeliverySignal, SignalKind
from engine.smtp.codes import ReplyCode

#: 5.7.x: security or policy status (RFC 3463 §3.8) — blocks, spam rejections, auth failures.
_BLOCK_CLASS = "5.7."
#: 5.2.x mailbox status and 5.3.x mail system status: full or disabled, not a bad address.
_SOFT_CLASSES = ("5.2.", "5.3.")


def signal_kind(
    kind: OutcomeKind, throttled: bool, reply_code: int | None, enhanced_status: str | None
) -> SignalKind | None:
    """What a relay outcome says about a sender x provider (None: nothing, e.g. held)."""
    if kind is OutcomeKind.RELAYED:
        return SignalKind.DELIVERED
    if kind is OutcomeKind.DEFERRED:
        if throttled or reply_code == ReplyCode.SERVICE_UNAVAILABLE:
            return SignalKind.THROTTLED
        return SignalKind.DEFERRED
    if kind is OutcomeKind.FAILED:
        status = enhanced_status or ""
        if status.startswith(_BLOCK_CLASS):
            return SignalKind.BLOCKED
        if status.startswith(_SOFT_CLASSES) or reply_code == ReplyCode.EXCEEDED_STORAGE:
            return SignalKind.SOFT_BOUNCE
        return SignalKind.HARD_BOUNCE
    return None  # HELD, SUPPRESSED: never reached the provider


def from_outcome(
    tenant_id: str,
    sender: str,
    provider: str,
    kind: OutcomeKind,
    *,
    throttled: bool = False,
    reply_code: int | None = None,
    enhanced_status: str | None = None,
) -> DeliverySignal | None:
    """The signal of one relay attempt (None when it says nothing about the provider)."""
    sk = signal_kind(kind, throttled, reply_code, enhanced_status)
    if sk is None:
        return None
    return DeliverySignal(
        tenant_id=tenant_id,
        sender=sender,
        provider=provider,
        kind=sk,
        reply_code=reply_code,
        enhanced_status=enhanced_status,
    )
