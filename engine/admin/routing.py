"""The route table shared by the app and the OpenAPI document, and request/response helpers.

Every route is declared once as a :class:`Route` (method, path, handler, the msgspec types of its
query, body and responses); ``app.py`` registers the handlers and ``openapi.py`` describes the
same list, so the document cannot drift from what is served.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
from aiohttp import web

from engine.admin.context import AdminContext
from engine.errors import AdminRequestError
from engine.keys.ratelimit import EnqueueLimiter, retry_after
from engine.keys.token import OPERATOR, Access, Principal
from engine.store import tenants
from engine.store.pool import Conn

CTX: web.AppKey[AdminContext] = web.AppKey("ctx", AdminContext)
#: Who made the request, set by the auth middleware (the operator when absent: open loopback).
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
LIMITER: web.AppKey[EnqueueLimiter] = web.AppKey("limiter", EnqueueLimiter)

T = TypeVar("T")
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Route:
    """One admin route: what it takes and what it answers (for the app and for OpenAPI)."""

    method: str
    path: str
    handler: RouteHandler
    summary: str
    tag: str
    query: type | None = None  # a msgspec Struct; its fields are the query parameters
    body: Any = None  # a msgspec type (Struct, list[...], union) for the JSON request body
    body_required: bool = True
    responses: Mapping[int, Any] = field(default_factory=dict)  # status → msgspec type | None
    path_params: Mapping[str, str] = field(default_factory=dict)  # name → description
    media_type: str = "application/json"  # of the 200 response
    # Who may call it: required, so a new route cannot be added without deciding (docs/security.md).
    access: Access = field(kw_only=True)

    @property
    def auth(self) -> bool:
        """True when the route needs credentials."""
        return self.access is not Access.PUBLIC


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: one sentence saying what was wrong and what to do."""

    error: str


def ctx_of(request: web.Request) -> AdminContext:
    return request.app[CTX]


def principal_of(request: web.Request) -> Principal:
    """The caller (the operator token, or one tenant's API key)."""
    principal: Principal = request.get(PRINCIPAL, OPERATOR)
    return principal


def tenant_scope(request: web.Request, asked: str | None) -> str | None:
    """The tenant a request may see: the key's own (whatever was asked), or the operator's filter.

    A tenant key asking for another tenant gets 404, the same answer as for a tenant that does
    not exist, so the answer says nothing about other tenants.
    """
    principal = principal_of(request)
    if principal.is_operator:
        return asked
    if asked is not None and asked != principal.tenant_id:
        raise AdminRequestError(f"unknown tenant {asked!r}", status=404)
    return principal.tenant_id


@contextlib.asynccontextmanager
async def tenant_db(
    request: web.Request, pool: asyncpg.Pool | None = None
) -> AsyncIterator[asyncpg.Pool | Conn]:
    """Where a request's tenant data is read and written: for a tenant key when the database
    roles are on (``[database] role``), one transaction as ``engine_api`` with the key's tenant
    set by ``engine.set_tenant``, so FORCE ROW LEVEL SECURITY limits every query to that tenant
    even if the application's own filter were wrong; otherwise (the operator token, or no
    roles) the pool. Both layers apply: handlers keep passing :func:`tenant_scope`'s tenant.
    ``pool``: another pool than the daemon's (the read replica, for a read-only request).
    """
    ctx = ctx_of(request)
    pool = ctx.pool if pool is None else pool
    tenant = principal_of(request).tenant_id
    if tenant is None or ctx.cfg.database.role is None:
        yield pool
        return
    async with tenants.scoped(pool, tenant) as conn:
        yield conn


def require_tenant(request: web.Request, given: str | None, *, what: str = "tenant") -> str:
    """The tenant a write applies to: the key's own, or the one the operator named."""
    scoped = tenant_scope(request, given)
    if scoped is None:
        raise AdminRequestError(f"{what} is required (the operator token acts for any tenant)")
    return scoped


def json_response(value: object, status: int = 200) -> web.Response:
    """Encode a struct (or plain data) with msgspec; never hand-built JSON."""
    return web.Response(body=_ENCODER.encode(value), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response(ErrorBody(message), status=status)


def rate_limited(wait_s: float, limiter: EnqueueLimiter) -> web.Response:
    """429 with Retry-After: this key enqueued more than its rate."""
    response = error_response(
        429,
        f"this API key's enqueue rate is used up ({limiter.rate_per_s:g} jobs/s, bursts of"
        f" {limiter.burst}); retry after {wait_s:.1f}s",
    )
    response.headers["Retry-After"] = retry_after(wait_s)
    return response


def _explain(exc: msgspec.ValidationError, where: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.ttl_s`": keep it, name the place.
    return f"invalid {where}: {exc}"


def parse_query(request: web.Request, kind: type[T]) -> T:
    """Validate the query string into ``kind`` (numbers converted, unknown parameters refused)."""
    query: dict[str, str] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise AdminRequestError(f"query parameter {key!r} given {len(values)} times")
        query[key] = values[0]
    try:
        return msgspec.convert(query, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise AdminRequestError(_explain(exc, "query").replace("`$.", "`")) from None


async def read_body(request: web.Request, kind: Any, *, optional: bool = False) -> Any:
    """Read and validate the JSON body; aiohttp answers 413 past the app's size limit."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise AdminRequestError("a JSON request body is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise AdminRequestError(_explain(exc, "request body")) from None
    except msgspec.DecodeError as exc:
        raise AdminRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's depth guard (about 1,000 levels): bounded, clean
        raise AdminRequestError("request body is JSON nested too deeply") from None


def int_param(request: web.Request, name: str) -> int:
    """A path parameter that must be a positive integer (else 400, not 500)."""
    raw = request.match_info[name]
    # isascii: str.isdigit() is also true for "³" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise AdminRequestError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)
