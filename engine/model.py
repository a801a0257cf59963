"""The structs that cross package boundaries: jobs, outcomes, states, priorities.

These are part of the contracts in DESIGN §8 (the Job JSON and the job states); extend compatibly.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class Priority(enum.IntEnum):
    """Queue priority; the integer is what PostgreSQL stores (lower goes first)."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, name: str) -> Priority:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"priority must be high, normal or low, not {name!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class JobState(enum.StrEnum):
    """Job states (DESIGN §8). Final states never change again except by an operator."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    SENDING = "sending"
    RELAYED = "relayed"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    COMPLAINED = "complained"


#: States a worker may pick up (and `sending` with an expired lease, see store.jobs).
PENDING_STATES = (JobState.QUEUED.value, JobState.DEFERRED.value)


class Attachment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One attachment of a structured job; ``content`` is base64 in JSON."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None  # set for inline (multipart/related) parts
    disposition: str = "attachment"


class Job(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A send job as platform services submit it (the Job contract in DESIGN §8)."""

    tenant_id: str
    idempotency_key: str
    to: str
    from_: str | None = msgspec.field(default=None, name="from")
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    attachments: list[Attachment] = []
    priority: str = "normal"
    campaign_id: str | None = None
    send_at: str | None = None
    raw: bytes | None = None  # base64 in JSON: a complete RFC 5322 message instead of parts
    metadata: dict[str, Any] = {}
    list_unsubscribe: str | None = None  # https URL or mailto; the engine adds the RFC 8058 header
    # With campaign_id and no subject/text/html/raw: the recipient's values for the campaign's
    # template (docs/compose.md, "Campaign templates"), rendered at send time.
    variables: dict[str, Any] | None = None


class Content(msgspec.Struct, frozen=True, omit_defaults=True):
    """The part of a job that is the same for every recipient of a campaign.

    Stored once per (tenant, sha256) in the content tier; jobs point at it by hash.
    """

    from_: str | None = msgspec.field(default=None, name="from")
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    attachments: list[Attachment] = []
    raw: bytes | None = None
    list_unsubscribe: str | None = None


class OutcomeKind(enum.StrEnum):
    """What one relay attempt came to (RFC 3463 classes)."""

    RELAYED = "relayed"  # 2xx: the relay node took responsibility
    DEFERRED = "deferred"  # 4xx, timeout, dropped connection: try again later
    FAILED = "failed"  # 5xx: permanent
    SUPPRESSED = "suppressed"  # never attempted: address on the suppression list
    HELD = "held"  # not attempted now (shaping, paused sender, missing key): back to the queue
