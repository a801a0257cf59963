"""Relay layer: persistent SMTP sessions to the MailU nodes, failover, breakers, reply classes.

Sans-IO parts (no sockets): :mod:`~engine.relay.transaction` (the SMTP client transaction),
:mod:`~engine.relay.wire` (reply parser, payload), :mod:`~engine.relay.replies`,
:mod:`~engine.relay.breaker`, :mod:`~engine.relay.select`, :mod:`~engine.relay.dsn` (RFC 3461
parameters). I/O: :mod:`~engine.relay.session` (sessions, the transaction driver),
:mod:`~engine.relay.node` (one node's session pool) and :mod:`~engine.relay.pool` (all nodes
behind one ``send()``). See docs/relay.md.
"""

from engine.relay.breaker import BreakerState, CircuitBreaker
from engine.relay.observer import RelayObserver
from engine.relay.pool import NO_RELAY_AVAILABLE, RelayPool
from engine.relay.replies import ReplyCode, ReplyVerdict, classify_reply, parse_enhanced_status
from engine.relay.results import NodeStatus, RecipientRefusal, SendResult

__all__ = [
    "NO_RELAY_AVAILABLE",
    "BreakerState",
    "CircuitBreaker",
    "NodeStatus",
    "RecipientRefusal",
    "RelayObserver",
    "RelayPool",
    "ReplyCode",
    "ReplyVerdict",
    "SendResult",
    "classify_reply",
    "parse_enhanced_status",
]
