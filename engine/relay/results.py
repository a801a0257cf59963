"""What the relay pool hands back: the result of a send and the status of a node.

Frozen msgspec structs, because they cross into the queue worker, the store and the admin API.
"""

from __future__ import annotations

import msgspec

from engine.model import OutcomeKind
from engine.relay.breaker import BreakerState
from engine.relay.replies import ReplyVerdict

__all__ = ["NodeStatus", "RecipientRefusal", "SendResult"]


class RecipientRefusal(msgspec.Struct, frozen=True):
    """One recipient the node refused at RCPT while others of the same message were accepted."""

    recipient: str
    kind: OutcomeKind
    reply_code: int | None
    enhanced_status: str | None
    reply: str


class SendResult(msgspec.Struct, frozen=True):
    """The outcome of one :meth:`RelayPool.send`.

    ``kind`` is RELAYED only after the node answered 250 to the end of DATA. ``node`` is the node
    that gave the final answer (None when no node could be reached). ``refused`` lists recipients
    refused at RCPT when the message still went to others.
    """

    kind: OutcomeKind
    reply_code: int | None
    enhanced_status: str | None
    reply: str
    node: str | None
    throttled: bool = False
    refused: tuple[RecipientRefusal, ...] = ()
    nodes_tried: int = 1  # > 1 when the message failed over from unreachable nodes

    @classmethod
    def from_verdict(
        cls,
        verdict: ReplyVerdict,
        node: str | None,
        refused: tuple[RecipientRefusal, ...] = (),
    ) -> SendResult:
        return cls(
            kind=verdict.kind,
            reply_code=verdict.reply_code,
            enhanced_status=verdict.enhanced_status,
            reply=verdict.text,
            node=node,
            throttled=verdict.throttled,
            refused=refused,
        )


class NodeStatus(msgspec.Struct, frozen=True):
    """A relay node as /readyz and /v1/nodes show it."""

    name: str
    host: str
    port: int
    healthy: bool
    breaker: BreakerState
    connections_open: int
    connections_in_use: int
    sent: int  # messages the node answered 250 to
    failures: int  # connection-level failures (refused, TLS/AUTH, timeout, drop)
    last_error: str | None = None
