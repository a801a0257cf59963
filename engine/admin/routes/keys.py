"""``/v1/keys``: list, create, revoke and rotate tenant API keys (like ``engine keys``).

The operator token manages every tenant's keys; a tenant's ``manage`` key only its own tenant's
(another tenant's key prefix is a 404, as if it did not exist). A new key is in the creation
(or rotation) response only.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from engine.admin.routing import (
    Route,
    json_response,
    parse_query,
    principal_of,
    read_body,
    require_tenant,
    tenant_db,
    tenant_scope,
)
from engine.admin.schemas import NonEmpty
from engine.keys import service
from engine.keys.store import KeyView
from engine.keys.token import Access, Scope


class KeyQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``GET /v1/keys``: one tenant's keys (a tenant key: its own); ``revoked=true``: all."""

    tenant: NonEmpty | None = None
    revoked: bool = False


class KeyIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/keys``: ``tenant_id`` is required with the operator token, implied by a key."""

    scope: Scope
    tenant_id: NonEmpty | None = None
    name: Annotated[str, msgspec.Meta(max_length=service.MAX_NAME)] = ""


class KeyList(msgspec.Struct, frozen=True):
    keys: list[KeyView]


class KeyCreated(msgspec.Struct, frozen=True):
    """``key`` is shown here once; only its prefix can be seen afterwards."""

    key: str
    api_key: KeyView


class KeyRevoked(msgspec.Struct, frozen=True):
    api_key: KeyView
    revoked: bool


async def list_keys(request: web.Request) -> web.Response:
    q = parse_query(request, KeyQuery)
    async with tenant_db(request) as db:
        found = await service.listing(
            db, tenant_scope(request, q.tenant), include_revoked=q.revoked
        )
    return json_response(KeyList(found))


async def create_key(request: web.Request) -> web.Response:
    body: KeyIn = await read_body(request, KeyIn)
    tenant = require_tenant(request, body.tenant_id, what="tenant_id")
    async with tenant_db(request) as db:
        key, view = await service.create(
            db,
            tenant,
            body.scope.value,
            actor=principal_of(request).actor,
            name=body.name,
        )
    return json_response(KeyCreated(key, view), status=201)


async def revoke_key(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with tenant_db(request) as db:
        view = await service.revoke(
            db,
            request.match_info["prefix"],
            actor=principal.actor,
            tenant_id=principal.tenant_id,
        )
    return json_response(KeyRevoked(view, True))


async def rotate_key(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with tenant_db(request) as db:
        key, view = await service.rotate(
            db,
            request.match_info["prefix"],
            actor=principal.actor,
            tenant_id=principal.tenant_id,
        )
    return json_response(KeyCreated(key, view), status=201)


_PREFIX = {"prefix": "the key's prefix (12 hex digits after pm_live_)"}

ROUTES = [
    Route(
        "GET",
        "/v1/keys",
        list_keys,
        "API keys (of one tenant with ?tenant=; a tenant key sees its own tenant's), no secrets",
        "keys",
        query=KeyQuery,
        responses={200: KeyList, 400: None, 404: None},
        access=Access.MANAGE,
    ),
    Route(
        "POST",
        "/v1/keys",
        create_key,
        "Create an API key; the answer holds the key, shown this once",
        "keys",
        body=KeyIn,
        responses={201: KeyCreated, 400: None, 404: None},
        access=Access.MANAGE,
    ),
    Route(
        "DELETE",
        "/v1/keys/{prefix}",
        revoke_key,
        "Revoke an API key now (idempotent)",
        "keys",
        path_params=_PREFIX,
        responses={200: KeyRevoked, 400: None, 404: None},
        access=Access.MANAGE,
    ),
    Route(
        "POST",
        "/v1/keys/{prefix}/rotate",
        rotate_key,
        "Replace an API key: a new key (shown once) with the same tenant and scope; the old one"
        " is revoked",
        "keys",
        path_params=_PREFIX,
        responses={201: KeyCreated, 400: None, 404: None},
        access=Access.MANAGE,
    ),
]
