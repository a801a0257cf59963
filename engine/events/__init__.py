"""Events and webhooks: what happened to each message, told to platform services and tenants.

``oltp.events`` is the durable record (:mod:`engine.events.store`); the publisher copies it to a
Redis stream (:mod:`engine.events.stream`); the webhook worker POSTs it to tenants' endpoints
(:mod:`engine.events.webhooks`, :mod:`engine.events.delivery`). docs/events.md is the guide.
"""

from engine.events.model import Event, EventKind, OutcomeEventInput, from_outcome_rows
from engine.events.store import write

__all__ = ["Event", "EventKind", "OutcomeEventInput", "from_outcome_rows", "write"]
