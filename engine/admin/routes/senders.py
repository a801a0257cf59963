"""``/v1/senders/{id}/pause|resume``: hold or release one sender's mail (id = From address).

Thin callers of :mod:`engine.senders.service`, like ``engine shaping pause|resume``.

Pausing takes effect at the dispatcher's next refresh of paused senders (a few seconds); jobs
already handed to a relay finish. Resuming makes the held jobs due just after that refresh
interval (``AdminContext.paused_refresh_s`` + 1 s) rather than at the end of their hold.
"""

from __future__ import annotations

from aiohttp import web

from engine.admin.context import AdminContext
from engine.admin.routing import (
    Route,
    ctx_of,
    json_response,
    parse_query,
    principal_of,
    read_body,
    tenant_scope,
)
from engine.admin.schemas import PauseRequest, SenderResult, TenantQuery
from engine.errors import AdminRequestError
from engine.keys.token import Access
from engine.senders import service
from engine.store.senders import SenderView


async def _one_sender(ctx: AdminContext, address: str, tenant: str | None) -> SenderView:
    """The sender row the request names; 404 unknown, 409 when several tenants use it."""
    found = await service.find(ctx.pool, address, tenant)
    if not found:
        scope = f" for tenant {tenant!r}" if tenant else ""
        raise AdminRequestError(
            f"no sender {address!r}{scope}",
            status=404,
            hint="senders are created when a tenant first enqueues mail from the address",
        )
    if len(found) > 1:
        tenants = ", ".join(s.tenant_id for s in found)
        raise AdminRequestError(
            f"sender {address!r} is used by several tenants ({tenants})",
            status=409,
            hint="add ?tenant=ID",
        )
    return found[0]


async def pause(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    address = request.match_info["id"]
    q = parse_query(request, TenantQuery)
    body = await read_body(request, PauseRequest, optional=True) or PauseRequest()
    sender = await _one_sender(ctx, address, tenant_scope(request, q.tenant))
    changed = await service.pause(
        ctx.pool,
        sender.tenant_id,
        sender.address,
        body.reason,
        actor=principal_of(request).actor,
        cache=ctx.shaper,
    )
    if changed is None:  # deleted between the two statements
        raise AdminRequestError(f"no sender {address!r}", status=404)
    return json_response(SenderResult(sender=changed))


async def resume(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    address = request.match_info["id"]
    q = parse_query(request, TenantQuery)
    sender = await _one_sender(ctx, address, tenant_scope(request, q.tenant))
    changed, released = await service.resume(
        ctx.pool,
        sender.tenant_id,
        sender.address,
        actor=principal_of(request).actor,
        cache=ctx.shaper,
        grace_s=ctx.paused_refresh_s + 1.0,
    )
    if changed is None:
        raise AdminRequestError(f"no sender {address!r}", status=404)
    return json_response(SenderResult(sender=changed, released=released))


_ID = {"id": "the sender's From address (case-insensitive)"}

ROUTES = [
    Route(
        "POST",
        "/v1/senders/{id}/pause",
        pause,
        "Pause a sender: its jobs are held until resumed (optional body {'reason': ...})",
        "senders",
        query=TenantQuery,
        body=PauseRequest,
        body_required=False,
        path_params=_ID,
        responses={200: SenderResult, 404: None, 409: None},
        access=Access.MANAGE,
    ),
    Route(
        "POST",
        "/v1/senders/{id}/resume",
        resume,
        "Resume a paused sender (manual or automatic pause); its held jobs are released",
        "senders",
        query=TenantQuery,
        path_params=_ID,
        responses={200: SenderResult, 404: None, 409: None},
        access=Access.MANAGE,
    ),
]
