"""``/v1/inbound/quarantined`` and ``/v1/inbound/requeue``: the quarantined inbound messages
(their parse used up the CPU budget or crashed the parse worker; docs/bounces.md), as with
``engine bounce quarantined`` and ``engine bounce requeue``: the same service functions."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from engine.admin.routing import Route, ctx_of, json_response, parse_query, read_body
from engine.inbound import quarantine
from engine.inbound.quarantine import RequeueResult
from engine.keys.token import Access
from engine.store.inbound import Quarantined

#: Ids per requeue request (an operator retries a handful; a flood of quarantines is an attack).
MAX_IDS = 1000
InboundId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class QuarantinedQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How many to list, newest first."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_IDS)] = 100


class QuarantinedList(msgspec.Struct, frozen=True):
    """Quarantined messages still waiting for an operator, newest first."""

    messages: list[Quarantined]


class RequeueBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The inbound message ids to parse again."""

    ids: Annotated[list[InboundId], msgspec.Meta(min_length=1, max_length=MAX_IDS)]


async def list_quarantined(request: web.Request) -> web.Response:
    q = parse_query(request, QuarantinedQuery)
    tiers = ctx_of(request).content_tiers
    rows = await tiers.read_content(lambda pool: quarantine.listing(pool, q.limit))
    return json_response(QuarantinedList(messages=rows))


async def requeue(request: web.Request) -> web.Response:
    """Clear the quarantine mark; the daemon's sweep parses them again within seconds."""
    body = await read_body(request, RequeueBody)
    result = await quarantine.requeue(
        ctx_of(request).content, body.ids, "admin-api", audit_pool=ctx_of(request).pool
    )
    return json_response(result)


ROUTES = [
    Route(
        "GET",
        "/v1/inbound/quarantined",
        list_quarantined,
        "Inbound messages quarantined (parse CPU budget spent, parse worker crashed), newest first",
        "operations",
        query=QuarantinedQuery,
        responses={200: QuarantinedList},
        access=Access.OPERATOR,
    ),
    Route(
        "POST",
        "/v1/inbound/requeue",
        requeue,
        "Parse quarantined inbound messages again (like `engine bounce requeue ID...`)",
        "operations",
        body=RequeueBody,
        responses={200: RequeueResult},
        access=Access.OPERATOR,
    ),
]
