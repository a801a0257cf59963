"""``/v1/messages``: batch enqueue, search, trace, cancel, and act on many jobs at once.

Search, the timeline and the bulk actions call :mod:`engine.messages`, the same services as
``engine messages ...``.

Enqueue goes through :func:`engine.enqueue.enqueue`, the same service as ``engine enqueue``: each
job is validated on its own, so one bad job is one error in the answer and the rest go in.
"""

from __future__ import annotations

import logging

import asyncpg
import msgspec
from aiohttp import web

from engine import events
from engine.admin.context import AdminContext
from engine.admin.routing import (
    LIMITER,
    Route,
    ctx_of,
    int_param,
    json_response,
    parse_query,
    principal_of,
    rate_limited,
    read_body,
    tenant_db,
    tenant_scope,
)
from engine.admin.schemas import (
    ActionBody,
    ActionResult,
    CancelResult,
    EnqueueBody,
    EnqueueResponse,
    MessageDetail,
    MessagePage,
    MessageQuery,
    MessageShowQuery,
    RawEnqueueBody,
    TenantQuery,
)
from engine.enqueue import enqueue
from engine.errors import AdminRequestError
from engine.keys.token import Access
from engine.messages import actions, tracing
from engine.model import JobState, Priority
from engine.store import jobs as job_store
from engine.store import messages as message_store
from engine.store.message_actions import Selection

log = logging.getLogger("engine.admin")

ACTOR = "admin-api"  # who the audit log and the events name
MAX_BATCH = 10_000  # jobs per request; larger imports belong to `engine enqueue --jsonl`


async def post_messages(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    principal = principal_of(request)
    body = await read_body(request, RawEnqueueBody)
    items = body if isinstance(body, list) else body.messages
    if not items:
        raise AdminRequestError('no messages: send a JSON array of jobs or {"messages": [...]}')
    if len(items) > MAX_BATCH:
        raise AdminRequestError(
            f"{len(items)} messages in one request; at most {MAX_BATCH}",
            status=413,
            hint="split the batch, or use engine enqueue --jsonl for bulk imports",
        )
    if principal.prefix is not None:
        wait_s = await request.app[LIMITER].allow(principal.prefix, len(items))
        if wait_s > 0:
            return rate_limited(wait_s, request.app[LIMITER])
    results = await enqueue(
        ctx.pool,
        [bytes(item) for item in items],
        max_message_bytes=ctx.cfg.queue.max_message_bytes,
        max_age_s=ctx.cfg.queue.max_age_s,
        raw_trace=ctx.cfg.security.raw_trace_headers,
        enforce_domains=ctx.cfg.security.enforce_sender_domains,
        only_tenant=principal.tenant_id,
        content_pool=ctx.content,
    )
    accepted = sum(1 for r in results if r.job_id is not None)
    rejected = len(results) - accepted
    log.info("enqueued over the admin API", extra={"accepted": accepted, "rejected": rejected})
    answer = EnqueueResponse(accepted=accepted, rejected=rejected, results=results)
    # 422 only when nothing at all could be stored: a partial batch is a success to retry from.
    return json_response(answer, status=200 if accepted else 422)


async def get_messages(request: web.Request) -> web.Response:
    q = parse_query(request, MessageQuery)
    flt = tracing.SearchFilter(
        tenant_id=tenant_scope(request, q.tenant),
        campaign_id=q.campaign,
        sender=q.sender,
        recipient=q.recipient,
        message_id=q.message_id,
        state=q.state,
        priority=None if q.priority is None else Priority.parse(q.priority).value,
        since=q.since,
        until=q.until,
    )

    async def search(pool: asyncpg.Pool) -> tracing.SearchPage:
        async with tenant_db(request, pool) as db:
            return await tracing.search(db, flt, limit=q.limit, after=q.after)

    page = await ctx_of(request).read(search)
    return json_response(MessagePage(messages=page.messages, next=page.next))


async def get_message(request: web.Request) -> web.Response:
    """The job, its timeline and (``content=true``) the composed message: content is the
    operator's alone (a tenant key gets 403 for it)."""
    job_id = int_param(request, "id")
    q = parse_query(request, MessageShowQuery)
    pool = ctx_of(request).pool
    async with tenant_db(request) as db:
        tl = await tracing.show(db, job_id, tenant_scope(request, q.tenant))
    if tl is None:
        raise AdminRequestError(f"no message with id {job_id}", status=404)
    content = None
    if q.content:
        if principal_of(request).tenant_id is not None:
            raise AdminRequestError(
                "the composed message is served to the operator token only", status=403
            )
        raw = await tracing.composed(pool, tl.job, ctx_of(request).content_tiers)
        if raw is None:
            raise AdminRequestError(
                f"the content of message {job_id} is no longer stored (retention)", status=410
            )
        content = raw.decode("utf-8", "replace")
    fields = msgspec.structs.asdict(tl.job)
    return json_response(MessageDetail(**fields, events=tl.events, content=content))


async def post_actions(request: web.Request) -> web.Response:
    """Cancel, hold, release or retry every job a selection names (``dry_run``: count only)."""
    body: ActionBody = await read_body(request, ActionBody)
    sel = Selection(
        job_id=body.job_id,
        tenant_id=body.tenant_id,
        campaign_id=body.campaign_id,
        sender=body.sender,
        domain=body.domain,
    )
    if sel.empty():
        raise AdminRequestError(
            f"{body.action} needs a selection: job_id, tenant_id, campaign_id, sender or domain"
        )
    result = await actions.run(
        ctx_of(request).pool, body.action, sel, actor=ACTOR, dry_run=body.dry_run
    )
    return json_response(result)


async def delete_message(request: web.Request) -> web.Response:
    """Cancel a job still waiting; 409 once a relay has it (or it reached a final state)."""
    job_id = int_param(request, "id")
    q = parse_query(request, TenantQuery)
    async with tenant_db(request) as db:
        state = await job_store.cancel(db, job_id, tenant_scope(request, q.tenant))
    if state is None:
        raise AdminRequestError(f"no message with id {job_id}", status=404)
    if state != JobState.CANCELLED:
        why = (
            "it is being handed to a relay node right now"
            if state == JobState.SENDING
            else f"it is already {state}"
        )
        raise AdminRequestError(f"message {job_id} cannot be cancelled: {why}", status=409)
    log.info("message cancelled over the admin API", extra={"job_id": job_id})
    await _cancel_event(ctx_of(request), job_id)
    return json_response(CancelResult(id=job_id, state=state))


async def _cancel_event(ctx: AdminContext, job_id: int) -> None:
    row = await message_store.get(ctx.pool, job_id)
    if row is None:
        return
    async with ctx.pool.acquire() as conn:
        await events.write(
            conn,
            [
                events.Event(
                    tenant_id=row.tenant_id,
                    kind=events.EventKind.CANCELLED.value,
                    job_id=job_id,
                    recipient=row.recipient,
                    message_id=row.message_id,
                    reason="operator",
                )
            ],
        )


_ID = {"id": "job id, as returned by POST /v1/messages"}

ROUTES = [
    Route(
        "POST",
        "/v1/messages",
        post_messages,
        f"Enqueue a batch of jobs (a JSON array or {{'messages': [...]}}, at most {MAX_BATCH})",
        "messages",
        body=EnqueueBody,
        responses={200: EnqueueResponse, 422: EnqueueResponse, 400: None, 413: None, 429: None},
        access=Access.SEND,
    ),
    Route(
        "GET",
        "/v1/messages",
        get_messages,
        "Search jobs by tenant, campaign, sender, recipient, Message-ID, state, priority and"
        " creation time (newest first, keyset pages: pass `next` as `after`)",
        "messages",
        query=MessageQuery,
        responses={200: MessagePage, 400: None},
        access=Access.READ,
    ),
    Route(
        "GET",
        "/v1/messages/{id}",
        get_message,
        "One job with its timeline (every event, attempt, reply, node, DKIM selector);"
        " content=true adds the composed message",
        "messages",
        query=MessageShowQuery,
        path_params=_ID,
        responses={200: MessageDetail, 403: None, 404: None, 410: None},
        access=Access.READ,
    ),
    Route(
        "POST",
        "/v1/messages/actions",
        post_actions,
        "Cancel, hold, release or retry now every job of a selection (job, tenant, campaign,"
        " sender, recipient domain); dry_run counts; audited, one event per job changed",
        "messages",
        body=ActionBody,
        responses={200: ActionResult, 400: None},
        access=Access.OPERATOR,
    ),
    Route(
        "DELETE",
        "/v1/messages/{id}",
        delete_message,
        "Cancel a job not yet relayed (409 once relayed or final)",
        "messages",
        query=TenantQuery,
        path_params=_ID,
        responses={200: CancelResult, 404: None, 409: None},
        access=Access.SEND,
    ),
]
