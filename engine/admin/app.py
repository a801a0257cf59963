"""Build the admin ``web.Application``: routes from the shared table, auth, errors, metrics.

Middlewares, outermost first: ``observe`` (request counter by route pattern, debug access line —
never headers, so the token cannot reach a log), ``errors`` (every failure becomes
``{"error": "..."}``: 4xx for bad input, 503 when PostgreSQL/Redis are down, 500 only for a bug),
then bearer auth.
"""

from __future__ import annotations

import functools
import logging
import time

import asyncpg
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from engine import audit, metrics
from engine.admin import openapi
from engine.admin.auth import bearer_middleware, resolve_token
from engine.admin.context import AdminContext
from engine.admin.routes import (
    campaigns,
    domains,
    health,
    inbound,
    keys,
    messages,
    operations,
    senders,
    suppressions,
    unsubscribe,
    webhooks,
)
from engine.admin.routing import CTX, LIMITER, PRINCIPAL, Route, error_response
from engine.errors import AdminRequestError, ApiKeyError, EngineError, QueueError, StoreError
from engine.keys.ratelimit import EnqueueLimiter
from engine.keys.service import Authenticator
from engine.keys.token import OPERATOR, Access
from engine.redaction import redact

log = logging.getLogger("engine.admin")

MIN_BODY_LIMIT = 64 * 1024 * 1024  # bytes; raised to twice [queue] max_message_bytes if larger


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_document(), content_type="application/json")


ROUTES: list[Route] = [
    *health.ROUTES,
    *messages.ROUTES,
    *senders.ROUTES,
    *suppressions.ROUTES,
    *operations.ROUTES,
    *webhooks.ROUTES,
    *domains.ROUTES,
    *unsubscribe.ROUTES,
    *inbound.ROUTES,
    *keys.ROUTES,
    *campaigns.ROUTES,
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        "This document (OpenAPI 3.1)",
        "health",
        responses={200: None},
        access=Access.AUTHENTICATED,
    ),
]


@functools.cache
def _document() -> bytes:
    return msgspec.json.encode(openapi.document(ROUTES))


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound) and request.match_info.route.resource is None:
        return f"no route {request.method} {request.path} (see /openapi.json)"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"request body too large: {exc.text}"
    return exc.text or exc.reason


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right class of status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, _http_message(request, exc))
    except (AdminRequestError, ApiKeyError) as exc:
        return error_response(exc.status, str(exc))
    except asyncpg.DataError as exc:  # a value PostgreSQL cannot take (NUL byte, out of range)
        return error_response(400, f"invalid value: {exc}")
    except (StoreError, QueueError, RedisError, asyncpg.PostgresError, OSError) as exc:
        log.warning("admin request failed: backing service", extra={"error": str(exc)})
        return error_response(503, redact(f"a backing service is unavailable, retry later: {exc}"))
    except (asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("admin request failed: backing service", extra={"error": repr(exc)})
        return error_response(
            503, redact(f"a backing service is unavailable, retry later: {exc!r}")
        )
    except EngineError as exc:
        log.error("admin request failed", extra={"error": str(exc), "path": request.path})
        return error_response(500, redact(str(exc)))
    except Exception:
        log.exception("admin request crashed", extra={"path": request.path})
        return error_response(500, "internal error (logged by the engine)")


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route pattern (bounded cardinality) and log a debug access line."""
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics.ADMIN_REQUESTS.labels(route, str(response.status)).inc()
    log.debug(
        "admin request",
        extra={
            "method": request.method,
            "route": route,
            "status": response.status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            "remote": request.remote,
        },
    )
    return response


@web.middleware
async def audit_actions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every operator action that changed something (a successful non-GET) goes to the audit log.

    Path parameters only (job id, sender, webhook id), never bodies: suppressed addresses or
    webhook secrets must not be copied into the audit trail.
    """
    response = await handler(request)
    resource = request.match_info.route.resource
    if request.method in ("GET", "HEAD", "OPTIONS") or response.status >= 400 or resource is None:
        return response
    if resource.canonical.startswith("/v1/unsubscribe/"):
        return response  # recipients' own action, recorded as an event instead
    principal = request.get(PRINCIPAL, OPERATOR)
    try:
        await audit.record(
            request.app[CTX].pool,
            principal.actor,
            f"{request.method} {resource.canonical}",
            ",".join(f"{k}={v}" for k, v in request.match_info.items()) or None,
            {"status": response.status, "query": dict(request.query), "remote": request.remote},
            tenant_id=principal.tenant_id or request.query.get("tenant"),
        )
    except (asyncpg.PostgresError, OSError) as exc:  # the action happened; say the log missed it
        log.error("audit log write failed", extra={"error": str(exc)})
    return response


def build_app(
    ctx: AdminContext, *, token: str | None = None, max_body_bytes: int | None = None
) -> web.Application:
    """The admin application for ``ctx``.

    ``token`` defaults to ``[admin] token`` / ``token_file``; ``max_body_bytes`` (answered with
    413 past it) to 64 MiB or twice ``[queue] max_message_bytes``, whichever is larger.
    """
    token = token if token is not None else resolve_token(ctx.cfg.admin)
    limit = max_body_bytes or max(MIN_BODY_LIMIT, 2 * ctx.cfg.queue.max_message_bytes)
    declared = {(r.method, r.path): r.access for r in ROUTES}
    authenticator = Authenticator(ctx.pool)
    app = web.Application(
        client_max_size=limit,
        middlewares=[
            observe,
            errors,
            bearer_middleware(token, authenticator, lambda m, p: declared.get((m, p))),
            audit_actions,
        ],
    )
    app[CTX] = ctx
    app[LIMITER] = EnqueueLimiter(
        ctx.streams.client,
        ctx.cfg.redis.prefix,
        rate_per_s=ctx.cfg.admin.key_enqueue_rate_per_s,
        burst=ctx.cfg.admin.key_enqueue_burst,
    )

    async def finish_touches(_: web.Application) -> None:
        await authenticator.close()

    app.on_cleanup.append(finish_touches)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
