"""Campaigns: store a campaign's template (a new version per call), show it, read its figures.

One service for ``PUT /v1/campaigns/{campaign_id}``, ``GET /v1/campaigns/{campaign_id}/stats``
and ``engine campaigns set|show|stats``. A template is checked and its required variable names
computed once here (docs/compose.md, "Campaign templates"); the figures come from the OLAP tier
(docs/analytics.md).
"""

from __future__ import annotations

import re

import asyncpg
import msgspec

from engine.compose.template import TemplateSource, required_variables
from engine.errors import CampaignError
from engine.store import campaigns as store
from engine.store import facts, tenants
from engine.store.pool import Conn

MAX_CAMPAIGN_ID = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Db = asyncpg.Pool | Conn


class Campaign(msgspec.Struct, frozen=True, omit_defaults=True):
    """A campaign's current template version, as the API and the CLI show it."""

    campaign_id: str
    tenant_id: str
    version: int
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    required: list[str] = []


class Counters(msgspec.Struct, frozen=True):
    """Outcome counts of a campaign (bounced counts hard and soft bounces)."""

    relayed: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0
    deferred: int = 0
    failed: int = 0


class DayCounters(Counters, frozen=True, kw_only=True):
    """One send day's counts (``day`` is the UTC day the messages were sent)."""

    day: str


class CampaignStats(msgspec.Struct, frozen=True):
    """A campaign's figures from the OLAP tier: totals and per send day."""

    campaign_id: str
    tenant_id: str
    totals: Counters
    days: list[DayCounters]


def check_campaign_id(campaign_id: str) -> str:
    """The campaign id, or :class:`CampaignError` when it cannot be one (as for jobs)."""
    if not campaign_id or len(campaign_id) > MAX_CAMPAIGN_ID or _CONTROL.search(campaign_id):
        raise CampaignError(
            f"campaign_id: 1 to {MAX_CAMPAIGN_ID} characters without control characters"
        )
    return campaign_id


async def set_template(
    db: Db,
    tenant_id: str,
    campaign_id: str,
    source: TemplateSource,
    *,
    tenants_db: Db | None = None,
) -> Campaign:
    """Check ``source`` and store it as the campaign's next version; returns that version.

    Raises :class:`~engine.errors.TemplateError` (what is wrong, with the part and line) or
    :class:`CampaignError` (unknown tenant, bad id). Jobs enqueued from now on render it; jobs
    already queued keep the version they were enqueued with. ``db`` is the content tier's;
    ``tenants_db`` the oltp tier's when content lives on another server.
    """
    check_campaign_id(campaign_id)
    required = required_variables(source)
    if tenant_id not in await tenants.known(db if tenants_db is None else tenants_db, [tenant_id]):
        raise CampaignError(
            f"unknown tenant {tenant_id!r}", hint=f"add it with: engine tenants add {tenant_id}"
        )
    stored = await store.put(
        db,
        tenant_id,
        campaign_id,
        subject=source.subject,
        text=source.text,
        html=source.html,
        required=required,
    )
    return Campaign(campaign_id, tenant_id, stored.version)


async def show(db: Db, tenant_id: str, campaign_id: str) -> Campaign:
    """The campaign's current template; :class:`CampaignError` when none is stored."""
    found = await store.current(db, tenant_id, campaign_id)
    if found is None:
        raise CampaignError(
            f"no template stored for campaign {campaign_id!r} of tenant {tenant_id!r}",
            hint="store one with engine campaigns set or PUT /v1/campaigns/{campaign_id}",
        )
    return Campaign(
        campaign_id,
        tenant_id,
        found.version,
        found.subject,
        found.text,
        found.html,
        found.required,
    )


async def stats(
    db: Db, tenant_id: str, campaign_id: str, *, olap: Db | None = None
) -> CampaignStats:
    """A campaign's counters per send day and in total (zeros for a campaign with a template
    and no mail yet); :class:`CampaignError` when the tenant has no such campaign. ``db`` is
    the content tier's (templates); ``olap`` the olap tier's when it lives on another server."""
    per_day = await facts.campaign_days(db if olap is None else olap, tenant_id, campaign_id)
    if not per_day and await store.current(db, tenant_id, campaign_id) is None:
        raise CampaignError(
            f"no campaign {campaign_id!r} of tenant {tenant_id!r} (no template, no mail)"
        )
    names = Counters.__struct_fields__
    totals = {name: sum(day.get(name, 0) for day in per_day.values()) for name in names}
    days = [
        DayCounters(day=day.isoformat(), **{n: counts.get(n, 0) for n in names})
        for day, counts in sorted(per_day.items())
    ]
    return CampaignStats(campaign_id, tenant_id, Counters(**totals), days)
