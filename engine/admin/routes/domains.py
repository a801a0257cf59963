"""``/v1/domains``: tenants' sending domains (docs/security.md, "Sending domains").

The same service as ``engine domains``: register (the answer holds the TXT record to publish),
verify through the daemon's DNS seam, list, remove.
"""

from __future__ import annotations

from aiohttp import web

from engine.admin.routing import Route, ctx_of, json_response, parse_query, read_body
from engine.admin.schemas import (
    DomainIn,
    DomainList,
    DomainOut,
    DomainRef,
    DomainRemoved,
    TenantQuery,
    TenantRequired,
)
from engine.errors import AdminRequestError, DomainError
from engine.keys.token import Access
from engine.tenancy import domains


async def list_domains(request: web.Request) -> web.Response:
    q = parse_query(request, TenantQuery)
    return json_response(DomainList(await domains.list_domains(ctx_of(request).pool, q.tenant)))


async def add_domain(request: web.Request) -> web.Response:
    body: DomainIn = await read_body(request, DomainIn)
    try:
        found = await domains.add(
            ctx_of(request).pool, body.tenant_id, body.domain, verified=body.verified
        )
    except DomainError as exc:
        raise AdminRequestError(exc.message, hint=exc.hint) from None
    return json_response(DomainOut(found), status=201)


async def verify_domain(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body: DomainRef = await read_body(request, DomainRef)
    try:
        found = await domains.verify(ctx.pool, body.tenant_id, body.domain, ctx.resolve)
    except DomainError as exc:
        raise AdminRequestError(exc.message, hint=exc.hint, status=409) from None
    return json_response(DomainOut(found))


async def remove_domain(request: web.Request) -> web.Response:
    q = parse_query(request, TenantRequired)
    name = request.match_info["domain"]
    try:
        gone = await domains.remove(ctx_of(request).pool, q.tenant, name)
    except DomainError as exc:
        raise AdminRequestError(exc.message, hint=exc.hint) from None
    if not gone:
        raise AdminRequestError(f"{name} is not registered for tenant {q.tenant}", status=404)
    return json_response(DomainRemoved(q.tenant, name, True))


ROUTES = [
    Route(
        "GET",
        "/v1/domains",
        list_domains,
        "Sending domains (of one tenant with ?tenant=), verified or pending with their TXT proof",
        "domains",
        query=TenantQuery,
        responses={200: DomainList, 400: None},
        access=Access.OPERATOR,
    ),
    Route(
        "POST",
        "/v1/domains",
        add_domain,
        "Register a tenant's sending domain; verified=true when the operator vouches for it",
        "domains",
        body=DomainIn,
        responses={201: DomainOut, 400: None},
        access=Access.OPERATOR,
    ),
    Route(
        "POST",
        "/v1/domains/verify",
        verify_domain,
        "Look up a registered domain's TXT proof now; verified when it is published",
        "domains",
        body=DomainRef,
        responses={200: DomainOut, 400: None, 409: None},
        access=Access.OPERATOR,
    ),
    Route(
        "DELETE",
        "/v1/domains/{domain}",
        remove_domain,
        "Unregister a tenant's sending domain (?tenant= required)",
        "domains",
        path_params={"domain": "the domain name"},
        query=TenantRequired,
        responses={200: DomainRemoved, 400: None, 404: None},
        access=Access.OPERATOR,
    ),
]
