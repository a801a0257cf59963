"""What an event is: one state change of one message, as tenants see it (sans-IO).

An :class:`Event` is written to ``oltp.events`` (the durable record), published to the Redis
event stream and delivered to webhooks, always in the same JSON shape (:func:`to_json`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import msgspec

from engine.errors import EventError


class EventKind(StrEnum):
    """Every kind of event the engine records (docs/events.md)."""

    # the send path (outcome writer, enqueue, admin actions)
    QUEUED = "queued"
    RELAYED = "relayed"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    UNSUBSCRIBED = "unsubscribed"
    SENDER_PAUSED = "sender_paused"
    SENDER_RESUMED = "sender_resumed"
    # operator actions on messages (engine messages hold|release|retry; cancel is CANCELLED)
    HELD = "held"
    RELEASED = "released"
    RETRY_NOW = "retry_now"
    # inbound (engine/inbound/effects.py)
    BOUNCED = "bounced"
    SOFT_BOUNCED = "soft_bounced"
    COMPLAINED = "complained"
    AUTOREPLY = "autoreply"
    DELAYED = "delayed"  # a relay node's delay notice: the provider deferred it (4xx)
    DELIVERED = "delivered"  # a relay node's success notice: the provider accepted it
    NOT_SPAM = "not_spam"
    # an RFC 6591 authentication-failure report about our message: a DKIM/SPF/DMARC matter of
    # ours, never a recipient's complaint
    AUTH_FAILURE = "auth_failure"
    # a complaint / bounce naming a job it did not prove (DESIGN §7 Trust): it changed nothing
    UNVERIFIED_COMPLAINT = "unverified_complaint"
    UNVERIFIED_BOUNCE = "unverified_bounce"


KINDS = frozenset(k.value for k in EventKind)


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=False):
    """One event. ``id`` is given by ``oltp.events`` (None until written); ``at`` is UTC.

    ``campaign_id``, ``idempotency_key`` and ``metadata`` are the job's, as enqueued: readers of
    the log (stream publisher, webhook worker) fill them in with one join per batch, so writers
    on the send path carry nothing more and consumers correlate without a lookup. They are None
    for events of no job and once the job is gone from ``queue.jobs`` (retention).
    """

    tenant_id: str
    kind: str  # an EventKind value (str so readers keep working when a kind is added)
    job_id: int | None = None
    message_id: str | None = None
    recipient: str | None = None
    reason: str | None = None
    reply: str | None = None
    at: dt.datetime | None = None
    data: dict[str, Any] | None = None
    id: int | None = None
    campaign_id: str | None = None
    idempotency_key: str | None = None
    metadata: Any = None


class OutcomeEventInput(msgspec.Struct, frozen=True):
    """What the outcome writer knows of one job it wrote, beyond ``write_outcomes``' row.

    ``job_id`` matches the returned row's ``id``; the row gives tenant, sender and final state
    (the state actually stored: a deferral past the maximum age comes back ``failed``).
    """

    job_id: int
    message_id: str | None = None
    recipient: str | None = None
    reply: str | None = None
    code: int | None = None
    status: str | None = None  # enhanced status code, e.g. "4.7.0"
    node: str | None = None
    hold: bool = False  # the OutcomeRow's undo_attempt: a shaping/pause hold, not an attempt
    attempt: int | None = None  # the attempt number (1 for the first)
    selector: str | None = None  # DKIM selector(s) used
    relay_ms: float | None = None  # how long the relay attempt took


#: Job states the outcome writer stores that are worth an event ("sending" never is).
_STATE_EVENTS = {
    "queued": EventKind.DEFERRED,  # only ever a hold (see ``holds``)
    "deferred": EventKind.DEFERRED,
    "relayed": EventKind.RELAYED,
    "bounced": EventKind.BOUNCED,
    "failed": EventKind.FAILED,
    "suppressed": EventKind.SUPPRESSED,
    "cancelled": EventKind.CANCELLED,
    "complained": EventKind.COMPLAINED,
}


def from_outcome_rows(
    rows: Sequence[Mapping[str, Any]],
    inputs: Sequence[OutcomeEventInput],
    *,
    at: dt.datetime | None = None,
    holds: bool = False,
) -> list[Event]:
    """Events for the jobs ``write_outcomes`` actually updated.

    ``rows`` are its returned records (``id``, ``tenant_id``, ``sender``, ``state``); ``inputs``
    the writer's own view of the same jobs, matched by job id (jobs whose lease was lost are in
    ``inputs`` but not in ``rows`` and get no event). Holds (``OutcomeEventInput.hold``: shaping
    or a paused sender put the job back without an attempt) produce no event unless ``holds`` is
    true: they are internal pacing, not something that happened to the message.
    """
    by_job = {i.job_id: i for i in inputs}
    when = at or dt.datetime.now(dt.UTC)
    out: list[Event] = []
    for row in rows:
        kind = _STATE_EVENTS.get(row["state"])
        extra = by_job.get(row["id"]) or OutcomeEventInput(row["id"])
        if kind is None or (extra.hold and not holds and kind is EventKind.DEFERRED):
            continue
        data: dict[str, Any] = {"sender": row["sender"]}
        if extra.code is not None:
            data["code"] = extra.code
        if extra.status:
            data["status"] = extra.status
        if extra.node:
            data["node"] = extra.node
        if extra.attempt is not None and not extra.hold:
            data["attempt"] = extra.attempt
        if extra.selector:
            data["selector"] = extra.selector
        if extra.relay_ms is not None:
            data["relay_ms"] = round(extra.relay_ms, 1)
        out.append(
            Event(
                tenant_id=row["tenant_id"],
                kind=kind.value,
                job_id=row["id"],
                message_id=extra.message_id,
                recipient=extra.recipient,
                reason=_reason(kind, extra),
                reply=extra.reply,
                at=when,
                data=data,
            )
        )
    return out


def _reason(kind: EventKind, extra: OutcomeEventInput) -> str | None:
    """A short machine reason: the enhanced status when there is one, else the SMTP code."""
    if kind is EventKind.RELAYED:
        return None
    if extra.status:
        return extra.status
    return str(extra.code) if extra.code is not None else None


def check_kinds(events: Sequence[Event]) -> None:
    """Refuse an unknown kind loudly (a typo in a caller), before anything is written."""
    bad = sorted({e.kind for e in events} - KINDS)
    if bad:
        raise EventError(
            f"unknown event kind(s): {', '.join(bad)}",
            hint=f"use one of engine.events.EventKind: {', '.join(sorted(KINDS))}",
        )


_ENCODER = msgspec.json.Encoder()


def to_json(event: Event) -> bytes:
    """The event's JSON object (stream ``event`` field, webhook ``events`` items)."""
    return _ENCODER.encode(event)


def from_json(raw: bytes | str) -> Event:
    return msgspec.json.decode(raw, type=Event)
