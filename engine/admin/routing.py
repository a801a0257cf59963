"""The route table shared by the app and the OpenAPI document, and request/response helpers.

Every route is declared once as a :class:`Route` (method, path, handler, the msgspec types of its
query, body and responses); ``app.py`` registers the handlers and ``openapi.py`` describes the
same list, so the document cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from engine.admin.context import AdminContext
from engine.errors import AdminRequestError

CTX: web.AppKey[AdminContext] = web.AppKey("ctx", AdminContext)

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
    auth: bool = True
    media_type: str = "application/json"  # of the 200 response


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: one sentence saying what was wrong and what to do."""

    error: str


def ctx_of(request: web.Request) -> AdminContext:
    return request.app[CTX]


def json_response(value: object, status: int = 200) -> web.Response:
    """Encode a struct (or plain data) with msgspec; never hand-built JSON."""
    return web.Response(body=_ENCODER.encode(value), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response(ErrorBody(message), status=status)


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


def int_param(request: web.Request, name: str) -> int:
    """A path parameter that must be a positive integer (else 400, not 500)."""
    raw = request.match_info[name]
    # isascii: str.isdigit() is also true for "³" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise AdminRequestError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)
