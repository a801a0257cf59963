"""The admin API's request and response bodies and query strings, as frozen msgspec structs.

These types are validated on the way in (``routing.parse_query`` / ``routing.read_body``) and
described in ``/openapi.json``. Query structs forbid unknown parameters so a typo (``?tenat=``)
is a 400 naming the parameter rather than a silently ignored filter.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from engine.enqueue import EnqueueResult
from engine.events.model import EventKind
from engine.events.webhooks import Endpoint as WebhookEndpoint
from engine.messages.actions import BulkResult
from engine.model import Job
from engine.nodes.check import DEFAULT_MAX_DOMAINS, DEFAULT_RCPT
from engine.relay.results import NodeStatus
from engine.store.message_actions import BulkAction
from engine.store.messages import MessageView, TenantPending, TimelineEvent
from engine.store.senders import SenderView
from engine.store.suppressions import Suppression
from engine.tenancy.domains import Domain

MAX_PAGE = 1000

StateName = Literal[
    "queued",
    "deferred",
    "sending",
    "relayed",
    "bounced",
    "failed",
    "suppressed",
    "cancelled",
    "complained",
]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]


class _Query(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


# -- queries ------------------------------------------------------------------------------------


class MessageQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/messages``: every filter given must match; newest first."""

    recipient: NonEmpty | None = None
    message_id: NonEmpty | None = None
    state: StateName | None = None
    tenant: NonEmpty | None = None
    campaign: NonEmpty | None = None
    sender: NonEmpty | None = None
    priority: Literal["high", "normal", "low"] | None = None
    since: dt.datetime | None = None  # created at or after (ISO 8601)
    until: dt.datetime | None = None  # created before
    limit: PageLimit = 100
    after: Annotated[int, msgspec.Meta(ge=1)] | None = None  # the `next` of the previous page


class MessageShowQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/messages/{id}``: ``content=true`` adds the composed message."""

    tenant: NonEmpty | None = None
    content: bool = False


class CampaignIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/campaigns/{campaign_id}``: the template (Jinja2, sandboxed; docs/compose.md).

    ``tenant_id`` is for the operator token; a tenant key acts for its own tenant.
    """

    tenant_id: NonEmpty | None = None
    subject: Annotated[str, msgspec.Meta(min_length=1)]
    text: str | None = None
    html: str | None = None


class CampaignOut(msgspec.Struct, frozen=True):
    """The version a ``PUT`` stored (1 for a campaign's first template)."""

    campaign_id: str
    tenant_id: str
    version: int


class TenantQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An optional tenant scope (``?tenant=``)."""

    tenant: NonEmpty | None = None


class SuppressionQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/suppressions``: one tenant's list, ordered by address."""

    tenant: NonEmpty
    limit: PageLimit = 100
    after: NonEmpty | None = None  # the `next` of the previous page


class SuppressionKey(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``DELETE /v1/suppressions``: which entry to remove."""

    tenant: NonEmpty
    address: NonEmpty


class NodesQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/nodes``: ``probe=true`` runs a health check on every node first."""

    probe: bool = False


class NodesCheckQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/nodes/check``: the dry-run recipient, the timeout, how many sender domains."""

    rcpt: NonEmpty = DEFAULT_RCPT
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=120)] = 10.0
    max_domains: Annotated[int, msgspec.Meta(ge=0, le=MAX_PAGE)] = DEFAULT_MAX_DOMAINS


class QueuesQuery(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/queues``: how many of the busiest tenants to list."""

    tenants: Annotated[int, msgspec.Meta(ge=0, le=MAX_PAGE)] = 20
    all: bool = False  # count every state (finished ones too: a full count of the jobs table)


# -- bodies -------------------------------------------------------------------------------------


class EnqueueBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/messages`` body, object form (a bare JSON array of jobs is accepted too)."""

    messages: list[Job]


class RawBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The same envelope, jobs kept undecoded so each bad job is its own error."""

    messages: list[msgspec.Raw]


EnqueueBody = list[Job] | EnqueueBatch  # documented
RawEnqueueBody = list[msgspec.Raw] | RawBatch  # decoded


class EnqueueResponse(msgspec.Struct, frozen=True):
    """Per-job results in input order; a refused job has ``error`` and no ``job_id``."""

    accepted: int
    rejected: int
    results: list[EnqueueResult]


class PauseRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Optional body of ``POST /v1/senders/{id}/pause``."""

    reason: Annotated[str, msgspec.Meta(max_length=500)] = "paused by an operator"


class SuppressionIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One suppression to add; ``ttl_s`` null means permanent.

    ``tenant_id`` is required with the operator token and implied by a tenant API key.
    """

    tenant_id: NonEmpty | None = None
    address: NonEmpty
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "suppressed"
    source: Literal["operator", "gdpr", "unsubscribe", "complaint", "bounce"] = "operator"
    ttl_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


SuppressionBody = SuppressionIn | list[SuppressionIn]


# -- responses ----------------------------------------------------------------------------------


class Health(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    """``ready`` is false (HTTP 503) when a check failed or a drain was requested."""

    ready: bool
    draining: bool
    checks: dict[str, str]


class MessagePage(msgspec.Struct, frozen=True):
    """A page of jobs; pass ``next`` as ``after`` for the following page (null: last page)."""

    messages: list[MessageView]
    next: int | None


class MessageDetail(MessageView, frozen=True, kw_only=True):
    """One job with its timeline (every event, oldest first) and, on request, its content."""

    events: list[TimelineEvent] = msgspec.field(default_factory=list)
    content: str | None = None


class ActionBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/messages/actions``: an action on every job the given fields select (at least
    one); ``dry_run`` only counts."""

    action: BulkAction
    dry_run: bool = False
    job_id: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tenant_id: NonEmpty | None = None
    campaign_id: NonEmpty | None = None
    sender: NonEmpty | None = None
    domain: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] | None = None


ActionResult = BulkResult


class CancelResult(msgspec.Struct, frozen=True):
    id: int
    state: str


class SenderResult(msgspec.Struct, frozen=True):
    """The sender after the change; ``released``: held jobs made due again by a resume."""

    sender: SenderView
    released: int = 0


class SuppressionWritten(msgspec.Struct, frozen=True):
    written: int


class SuppressionPage(msgspec.Struct, frozen=True):
    suppressions: list[Suppression]
    next: str | None


class SuppressionRemoved(msgspec.Struct, frozen=True):
    tenant_id: str
    address: str
    removed: bool


class Nodes(msgspec.Struct, frozen=True):
    """Every relay node; ``available``: at least one breaker lets traffic through."""

    available: bool
    nodes: list[NodeStatus]


class Queues(msgspec.Struct, frozen=True, kw_only=True):
    """Redis stream depth per priority; PostgreSQL jobs per state (queued, deferred, sending;
    every state with ``all=true``); the backlog by bucket (queued, deferred, held) and priority,
    as ``engine_backlog_jobs`` exports it; held jobs; waiting tenants; ages."""

    streams: dict[str, int]
    states: dict[str, int]
    oldest_due_age_s: dict[str, float]
    tenants: list[TenantPending]
    backlog: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    held: int = 0


class Draining(msgspec.Struct, frozen=True):
    draining: bool


# -- webhooks (engine/admin/routes/webhooks.py) -------------------------------------------------


class WebhookIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/webhooks``: a tenant endpoint; ``kinds`` empty means every event kind.

    ``secret`` (optional) is the HMAC key; one is generated when absent. It is answered once,
    in the creation response, and never listed afterwards. ``tenant_id`` is required with the
    operator token and implied by a tenant API key.
    """

    tenant_id: NonEmpty | None = None
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    kinds: list[EventKind] = []
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class WebhookCreated(msgspec.Struct, frozen=True):
    webhook: WebhookEndpoint
    secret: str


class WebhookList(msgspec.Struct, frozen=True):
    webhooks: list[WebhookEndpoint]


class WebhookRemoved(msgspec.Struct, frozen=True):
    webhook: WebhookEndpoint
    removed: bool


# -- sending domains (engine/admin/routes/domains.py) -------------------------------------------


class DomainIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/domains``: register a tenant's sending domain; ``verified``: the operator
    vouches for it (no DNS check)."""

    tenant_id: NonEmpty
    domain: Annotated[str, msgspec.Meta(min_length=3, max_length=253)]
    verified: bool = False


class DomainRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/domains/verify``: look up the TXT proof of a registered domain now."""

    tenant_id: NonEmpty
    domain: Annotated[str, msgspec.Meta(min_length=3, max_length=253)]


class TenantRequired(_Query, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A required tenant scope (``?tenant=``)."""

    tenant: NonEmpty


class DomainOut(msgspec.Struct, frozen=True):
    domain: Domain


class DomainList(msgspec.Struct, frozen=True):
    domains: list[Domain]


class DomainRemoved(msgspec.Struct, frozen=True):
    tenant_id: str
    domain: str
    removed: bool
