"""``/v1/webhooks``: list, add and remove tenants' webhook endpoints (docs/events.md).

A URL the webhook rules refuse (host pattern, port, an address that is not global unicast:
engine/events/ssrf.py) gets a 400 naming the rule. The
signing secret is in the creation response only.
"""

from __future__ import annotations

from aiohttp import web

from engine.admin.routing import (
    Route,
    ctx_of,
    int_param,
    json_response,
    parse_query,
    read_body,
    require_tenant,
    tenant_db,
    tenant_scope,
)
from engine.admin.schemas import (
    TenantQuery,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookRemoved,
)
from engine.errors import AdminRequestError, WebhookError
from engine.events import webhooks
from engine.events.ssrf import policy_of
from engine.keys.token import Access


async def list_webhooks(request: web.Request) -> web.Response:
    q = parse_query(request, TenantQuery)
    async with tenant_db(request) as db:
        found = await webhooks.list_endpoints(db, tenant_scope(request, q.tenant))
    return json_response(WebhookList(found))


async def add_webhook(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body: WebhookIn = await read_body(request, WebhookIn)
    tenant = require_tenant(request, body.tenant_id, what="tenant_id")
    try:
        async with tenant_db(request) as db:
            endpoint, secret = await webhooks.create(
                db,
                tenant_id=tenant,
                url=body.url,
                policy=policy_of(ctx.cfg.events),
                resolve=ctx.resolve,
                kinds=[k.value for k in body.kinds],
                secret=body.secret,
                description=body.description,
            )
    except WebhookError as exc:
        raise AdminRequestError(exc.message, hint=exc.hint) from None
    return json_response(WebhookCreated(endpoint, secret), status=201)


async def remove_webhook(request: web.Request) -> web.Response:
    endpoint_id = int_param(request, "id")
    async with tenant_db(request) as db:
        removed = await webhooks.delete(db, endpoint_id, tenant_scope(request, None))
    if removed is None:
        raise AdminRequestError(f"no webhook endpoint {endpoint_id}", status=404)
    return json_response(WebhookRemoved(removed, True))


ROUTES = [
    Route(
        "GET",
        "/v1/webhooks",
        list_webhooks,
        "Webhook endpoints (of one tenant with ?tenant=) and their delivery state",
        "webhooks",
        query=TenantQuery,
        responses={200: WebhookList, 400: None},
        access=Access.READ,
    ),
    Route(
        "POST",
        "/v1/webhooks",
        add_webhook,
        "Add a webhook endpoint (allow-listed hosts only); the answer holds its signing secret",
        "webhooks",
        body=WebhookIn,
        responses={201: WebhookCreated, 400: None, 404: None},
        access=Access.MANAGE,
    ),
    Route(
        "DELETE",
        "/v1/webhooks/{id}",
        remove_webhook,
        "Remove a webhook endpoint and its dead letters",
        "webhooks",
        path_params={"id": "the endpoint id"},
        responses={200: WebhookRemoved, 400: None, 404: None},
        access=Access.MANAGE,
    ),
]
