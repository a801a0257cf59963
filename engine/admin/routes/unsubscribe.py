"""RFC 8058 one-click unsubscribe: ``POST /v1/unsubscribe/{token}``.

No bearer token: the per-job token (a truncated HMAC only the engine can mint) is the
authorisation, so this one route may be exposed publicly through a reverse proxy while the rest
of the admin port stays private. GET never unsubscribes (link scanners follow GETs; RFC 8058 §3.2).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from engine.admin.routing import Route, ctx_of, json_response
from engine.compose.unsubscribe import job_of
from engine.errors import AdminRequestError
from engine.inbound import unsubscribe
from engine.keys.token import Access

PREFIX = "/v1/unsubscribe/"


class Unsubscribed(msgspec.Struct, frozen=True):
    unsubscribed: bool


async def one_click(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    job_id = job_of(request.match_info["token"], ctx.cfg.inbound)
    if job_id is None:
        raise AdminRequestError("unknown or invalid unsubscribe token", status=404)
    body = (await request.read())[:256]
    if body and b"List-Unsubscribe=One-Click" not in body:
        raise AdminRequestError(
            "one-click unsubscribe expects the body List-Unsubscribe=One-Click (RFC 8058)",
            status=400,
        )
    done = await unsubscribe.apply(
        ctx.pool, [job_id], "one-click", olap_outbox=ctx.olap is not ctx.pool
    )
    if not done:
        raise AdminRequestError("unknown or invalid unsubscribe token", status=404)
    return json_response(Unsubscribed(True))


ROUTES = [
    Route(
        "POST",
        PREFIX + "{token}",
        one_click,
        "RFC 8058 one-click unsubscribe (the token authorises; no bearer token)",
        "unsubscribe",
        body_required=False,
        responses={200: Unsubscribed},
        path_params={"token": "the token from the message's List-Unsubscribe URL"},
        access=Access.PUBLIC,
    ),
]
