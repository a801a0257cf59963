"""``/v1/campaigns``: campaign templates (docs/compose.md) and per-campaign figures
(docs/analytics.md).

The same service as ``engine campaigns``: ``PUT`` stores the campaign's template as its next
version; ``GET .../stats`` reads the campaign's counters per send day from the OLAP tier.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from engine import campaigns
from engine.admin.routing import (
    Route,
    ctx_of,
    json_response,
    parse_query,
    read_body,
    require_tenant,
    tenant_db,
)
from engine.admin.schemas import CampaignIn, CampaignOut, TenantQuery
from engine.compose.template import TemplateSource
from engine.errors import AdminRequestError, CampaignError, TemplateError
from engine.keys.token import Access

_ID = {"campaign_id": "the platform's campaign id (the jobs' campaign_id)"}


async def put_campaign(request: web.Request) -> web.Response:
    body: CampaignIn = await read_body(request, CampaignIn)
    campaign_id = request.match_info["campaign_id"]
    tenant = require_tenant(request, body.tenant_id, what="tenant_id")
    source = TemplateSource(body.subject, body.text, body.html)
    try:
        ctx = ctx_of(request)
        if ctx.content is ctx.pool:
            async with tenant_db(request) as db:
                stored = await campaigns.set_template(db, tenant, campaign_id, source)
        else:  # the content tier on another server: the tenant is checked on this one
            async with tenant_db(request) as db, tenant_db(request, ctx.content) as content:
                stored = await campaigns.set_template(
                    content, tenant, campaign_id, source, tenants_db=db
                )
    except (CampaignError, TemplateError) as exc:
        raise AdminRequestError(exc.message, hint=exc.hint) from None
    return json_response(CampaignOut(stored.campaign_id, stored.tenant_id, stored.version))


async def campaign_stats(request: web.Request) -> web.Response:
    q = parse_query(request, TenantQuery)
    campaign_id = request.match_info["campaign_id"]
    tenant = require_tenant(request, q.tenant)
    try:
        ctx = ctx_of(request)
        if ctx.content is ctx.pool and ctx.olap is ctx.pool:
            async with tenant_db(request) as db:
                found = await campaigns.stats(db, tenant, campaign_id)
        else:  # a tier on another server (the olap one's replica when it has one)

            async def on(olap_pool: asyncpg.Pool) -> campaigns.CampaignStats:
                async with (
                    tenant_db(request, ctx.content) as db,
                    tenant_db(request, olap_pool) as olap,
                ):
                    return await campaigns.stats(db, tenant, campaign_id, olap=olap)

            found = await ctx.read_olap(on)
    except CampaignError as exc:
        raise AdminRequestError(exc.message, status=404) from None
    return json_response(found)


ROUTES = [
    Route(
        "PUT",
        "/v1/campaigns/{campaign_id}",
        put_campaign,
        "Store a campaign's template (subject, text, html) as its next version; jobs with this"
        " campaign_id and variables are rendered from it at send time",
        "campaigns",
        body=CampaignIn,
        responses={200: CampaignOut, 400: None},
        path_params=_ID,
        access=Access.SEND,
    ),
    Route(
        "GET",
        "/v1/campaigns/{campaign_id}/stats",
        campaign_stats,
        "A campaign's outcome counters per send day and in total, from the OLAP tier",
        "campaigns",
        query=TenantQuery,
        responses={200: campaigns.CampaignStats, 400: None, 404: None},
        path_params=_ID,
        access=Access.READ,
    ),
]
