"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the route table.

Schemas come from the msgspec types the routes validate with
(:func:`msgspec.json.schema_components`), so the document describes exactly what is accepted.
Its ``webhooks`` section describes the POSTs the engine makes to a tenant's endpoints (the
:class:`~engine.events.delivery.WebhookPayload` body and the Standard Webhooks headers).

A copy is committed as ``clients/node/openapi.json`` (the Node client's types are generated from
it); ``make openapi`` rewrites it with ``python -m engine.admin.export_openapi`` and a test fails
while the copy is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import msgspec

from engine.admin.routing import ErrorBody, Route
from engine.events.delivery import WebhookPayload
from engine.events.signature import HEADER, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from engine.keys.token import Access

_REF = "#/components/schemas/{name}"
_Schemas = Callable[[Any], Any]


def _types(routes: Sequence[Route]) -> list[Any]:
    found: list[Any] = [ErrorBody, WebhookPayload]
    for r in routes:
        for kind in (r.query, r.body, *r.responses.values()):
            if kind is not None and kind not in found:
                found.append(kind)
    return found


def _parameters(route: Route, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in route.path_params.items()
    ]
    if route.query is not None:
        spec = components[route.query.__name__]
        required = set(spec.get("required", []))
        for name, schema in spec.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": schema}
            )
    return params


def _responses(route: Route, schema_of: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {}
    statuses = dict(route.responses)
    if route.auth:
        statuses.setdefault(401, None)
    if route.access not in (Access.PUBLIC, Access.AUTHENTICATED):
        statuses.setdefault(403, None)  # a tenant key whose scope does not reach this route
    if route.access in (Access.SEND, Access.READ, Access.MANAGE):
        statuses.setdefault(404, None)  # a tenant key naming another tenant or its objects
    statuses.setdefault(503, None)
    for status, kind in sorted(statuses.items()):
        phrase = HTTPStatus(status).phrase
        if kind is None and status < 300:
            media = {route.media_type: {"schema": {"type": "string"}}}
        else:
            schema = schema_of(kind if kind is not None else ErrorBody)
            media = {"application/json": {"schema": schema}}
        out[str(status)] = {"description": phrase, "content": media}
    return out


_WEBHOOK_HEADERS = (
    (ID_HEADER, "the batch's id, the same on every retry of the same events (deduplicate on it)"),
    (TIMESTAMP_HEADER, "Unix seconds when this attempt was signed"),
    (
        SIGNATURE_HEADER,
        "v1,<base64 HMAC-SHA256 over '<webhook-id>.<webhook-timestamp>.<raw body>'>, keyed "
        "with the endpoint secret's base64 part (whsec_ stripped); the standardwebhooks "
        "libraries verify it",
    ),
    (HEADER, "deprecated: t=<unix seconds>,v1=<hex HMAC-SHA256 over '<t>.<raw body>'>"),
)


def _webhooks(payload_schema: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 ``webhooks`` section: what a tenant's endpoint receives."""
    params = [
        {
            "name": name,
            "in": "header",
            "required": name != HEADER,
            "deprecated": name == HEADER,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in _WEBHOOK_HEADERS
    ]
    return {
        "events": {
            "post": {
                "summary": "A batch of events of one tenant, in commit order (docs/events.md)",
                "operationId": "webhook_events",
                "tags": ["webhooks"],
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": payload_schema}},
                },
                "responses": {
                    "200": {"description": "Any 2xx: delivered; the cursor moves past the batch"},
                    "default": {
                        "description": "Anything else (or no answer): retried with backoff, "
                        "then dead-lettered past [events] webhook_max_age_s"
                    },
                },
            }
        }
    }


def document(routes: Sequence[Route], *, version: str = "1") -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for ``routes``."""
    kinds = _types(routes)
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)

    def schema_of(kind: Any) -> Any:
        return schemas[kinds.index(kind)]  # by equality: union types are not interned

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.handler.__name__}",
            "tags": [r.tag],
            "responses": _responses(r, schema_of),
        }
        params = _parameters(r, components)
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": r.body_required,
                "content": {"application/json": {"schema": schema_of(r.body)}},
            }
        op["security"] = [{"bearer": []}] if r.auth else []
        op["x-access"] = r.access.value
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "penguinmails-engine admin API",
            "version": version,
            "description": (
                "Operator and enqueue API of one engine instance (DESIGN §8). Every route but "
                "/healthz and one-click unsubscribe needs 'Authorization: Bearer <credential>': "
                "the operator's [admin] token (every route, every tenant) or a tenant API key "
                "(pm_live_..., engine keys create): that tenant only, and only the routes its "
                "scope reaches (x-access: send, read, manage; 403 otherwise). Another tenant's "
                "ids answer 404. Errors are "
                '{"error": "..."}.'
            ),
        },
        "paths": paths,
        "webhooks": _webhooks(schema_of(WebhookPayload)),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the [admin] token or a tenant key pm_live_<prefix>_<secret>",
                }
            },
        },
    }


def render(doc: dict[str, Any]) -> bytes:
    """The committed form of a document: indented, keys in build order (stable), final newline."""
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
