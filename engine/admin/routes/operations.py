"""``/v1/nodes``, ``/v1/queues`` and ``/v1/drain``: what the engine is doing, and stopping it.

``/v1/nodes/check`` runs ``engine nodes check`` (the same :func:`engine.nodes.check.run_check`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from engine.admin.routing import Route, ctx_of, json_response, parse_query
from engine.admin.schemas import (
    Draining,
    Nodes,
    NodesCheckQuery,
    NodesQuery,
    Queues,
    QueuesQuery,
)
from engine.errors import AdminRequestError, UsageError
from engine.keys.token import Access
from engine.nodes.check import run_check
from engine.nodes.report import CheckReport
from engine.store import backlog as backlog_store
from engine.store import jobs as job_store
from engine.store import messages as message_store

log = logging.getLogger("engine.admin")


async def nodes(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    q = parse_query(request, NodesQuery)
    statuses = await ctx.relay.check_health() if q.probe else ctx.relay.snapshot()
    available = any(s.breaker != "open" for s in statuses)
    return json_response(Nodes(available=available, nodes=statuses))


async def check_nodes(request: web.Request) -> web.Response:
    """Capabilities, TLS, AUTH and dry-run transactions of every node."""
    return await _check(request, None)


async def check_node(request: web.Request) -> web.Response:
    """The same for the node named in the path."""
    return await _check(request, request.match_info["name"])


async def _check(request: web.Request, name: str | None) -> web.Response:
    ctx = ctx_of(request)
    q = parse_query(request, NodesCheckQuery)
    try:
        report = await run_check(
            ctx.cfg,
            ctx.pool,
            node=name,
            rcpt=q.rcpt,
            timeout_s=q.timeout_s,
            max_domains=q.max_domains,
        )
    except UsageError as exc:
        status = 404 if name is not None and "no relay node named" in str(exc) else 400
        raise AdminRequestError(str(exc), status=status) from None
    return json_response(report)


async def queues(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    q = parse_query(request, QueuesQuery)
    depth = await ctx.streams.depth()
    # Waiting and in-flight jobs only (no scan of finished ones) unless all=true asks for the
    # full per-state count.
    backlog = await ctx.read(backlog_store.read)
    states = await ctx.read(job_store.counts) if q.all else dict(backlog.states)
    oldest = await ctx.read(message_store.oldest_due_age_s)
    busiest = (
        await ctx.read(lambda p: message_store.pending_by_tenant(p, q.tenants)) if q.tenants else []
    )
    return json_response(
        Queues(
            streams=depth,
            states=states,
            oldest_due_age_s=oldest,
            tenants=busiest,
            backlog=backlog.waiting,
            held=backlog.by_state()["held"],
        )
    )


async def drain(request: web.Request) -> web.Response:
    """Stop taking work; the daemon exits once the mail in flight is written back."""
    ctx = ctx_of(request)
    if not ctx.draining:
        ctx.mark_draining()
        log.warning("drain requested over the admin API", extra={"remote": request.remote})
        ctx.drain()
    return json_response(Draining(True), status=202)


ROUTES = [
    Route(
        "GET",
        "/v1/nodes",
        nodes,
        "Relay nodes: health, breaker state, connections open/in use (probe=true checks now)",
        "operations",
        query=NodesQuery,
        responses={200: Nodes},
        access=Access.OPERATOR,
    ),
    Route(
        "GET",
        "/v1/nodes/check",
        check_nodes,
        "Check every relay node as the daemon connects (EHLO, TLS, AUTH) and dry-run MAIL/RCPT"
        " for the VERP return path and each sender domain; ok=false when one refuses",
        "operations",
        query=NodesCheckQuery,
        responses={200: CheckReport, 400: None},
        access=Access.OPERATOR,
    ),
    Route(
        "GET",
        "/v1/nodes/{name}/check",
        check_node,
        "Check one relay node (see /v1/nodes/check)",
        "operations",
        query=NodesCheckQuery,
        path_params={"name": "the [[relay.nodes]] name"},
        responses={200: CheckReport, 404: None},
        access=Access.OPERATOR,
    ),
    Route(
        "GET",
        "/v1/queues",
        queues,
        "Stream depth per priority, waiting and in-flight jobs per state (all=true: every state,"
        " a full count), the backlog by priority, oldest due age, busiest tenants",
        "operations",
        query=QueuesQuery,
        responses={200: Queues},
        access=Access.OPERATOR,
    ),
    Route(
        "POST",
        "/v1/drain",
        drain,
        "Drain: stop taking work, finish mail in flight, exit (like SIGTERM); idempotent",
        "operations",
        responses={202: Draining},
        access=Access.OPERATOR,
    ),
]
