"""``/v1/suppressions``: list, add and remove addresses a tenant must not mail."""

from __future__ import annotations

import logging

from aiohttp import web

from engine.admin.routing import (
    Route,
    json_response,
    parse_query,
    read_body,
    require_tenant,
    tenant_db,
    tenant_scope,
)
from engine.admin.schemas import (
    SuppressionBody,
    SuppressionIn,
    SuppressionKey,
    SuppressionPage,
    SuppressionQuery,
    SuppressionRemoved,
    SuppressionWritten,
)
from engine.compose.address import parse_address
from engine.errors import AdminRequestError, JobValidationError
from engine.keys.token import Access
from engine.store import suppressions as suppression_store
from engine.store import tenants

log = logging.getLogger("engine.admin")

MAX_ENTRIES = 10_000


def _address(index: int, entry: SuppressionIn) -> str:
    try:
        return parse_address(entry.address).addr_spec
    except JobValidationError as exc:
        raise AdminRequestError(f"entry {index}: {exc.message}") from None


async def list_suppressions(request: web.Request) -> web.Response:
    q = parse_query(request, SuppressionQuery)
    tenant = tenant_scope(request, q.tenant)
    assert tenant is not None  # the query requires it
    async with tenant_db(request) as db:
        page = await suppression_store.page(db, tenant, limit=q.limit, after=q.after)
    cursor = page[-1].address if len(page) == q.limit else None
    return json_response(SuppressionPage(suppressions=page, next=cursor))


async def add_suppressions(request: web.Request) -> web.Response:
    """Add one entry or a list; all or nothing (a bad entry refuses the request)."""
    body = await read_body(request, SuppressionBody)
    entries: list[SuppressionIn] = body if isinstance(body, list) else [body]
    if not entries:
        raise AdminRequestError("no suppressions given")
    if len(entries) > MAX_ENTRIES:
        raise AdminRequestError(f"at most {MAX_ENTRIES} suppressions per request", status=413)
    # A tenant key: its own tenant only (another is 404); the operator names one per entry.
    owners = [require_tenant(request, e.tenant_id, what=f"entry {i}: tenant_id") for i, e in
              enumerate(entries)]  # fmt: skip
    rows = [
        (owner, _address(i, e), e.reason, e.source, e.ttl_s)
        for i, (owner, e) in enumerate(zip(owners, entries, strict=True))
    ]
    async with tenant_db(request) as db:
        known = await tenants.known(db, set(owners))
        unknown = sorted(set(owners) - known)
        if unknown:
            raise AdminRequestError(
                f"unknown tenant(s): {', '.join(unknown)}",
                hint="add them with: engine tenants add ID",
            )
        written = await suppression_store.add(db, rows)
    log.info("suppressions added over the admin API", extra={"written": written})
    return json_response(SuppressionWritten(written), status=201)


async def remove_suppression(request: web.Request) -> web.Response:
    q = parse_query(request, SuppressionKey)
    tenant_scope(request, q.tenant)  # a tenant key: its own tenant only (else 404)
    async with tenant_db(request) as db:
        removed = await suppression_store.remove(db, q.tenant, q.address)
    if not removed:
        raise AdminRequestError(
            f"{q.address!r} is not on the suppression list of tenant {q.tenant!r}", status=404
        )
    log.info(
        "suppression removed over the admin API", extra={"tenant": q.tenant, "address": q.address}
    )
    return json_response(SuppressionRemoved(q.tenant, q.address.lower(), True))


ROUTES = [
    Route(
        "GET",
        "/v1/suppressions",
        list_suppressions,
        "A tenant's suppressions, by address (keyset pages: pass `next` as `after`)",
        "suppressions",
        query=SuppressionQuery,
        responses={200: SuppressionPage, 400: None},
        access=Access.READ,
    ),
    Route(
        "POST",
        "/v1/suppressions",
        add_suppressions,
        "Suppress one address or a list (ttl_s null: permanent)",
        "suppressions",
        body=SuppressionBody,
        responses={201: SuppressionWritten, 400: None, 404: None, 413: None},
        access=Access.MANAGE,
    ),
    Route(
        "DELETE",
        "/v1/suppressions",
        remove_suppression,
        "Remove an address from a tenant's suppression list",
        "suppressions",
        query=SuppressionKey,
        responses={200: SuppressionRemoved, 404: None},
        access=Access.MANAGE,
    ),
]
