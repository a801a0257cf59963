"""Webhook endpoints (``oltp.webhook_endpoints``): the allow-list rule and their management.

The admin API (``/v1/webhooks``) and the delivery worker call these; no SQL lives in a route.
A URL is accepted only when it passes :mod:`engine.events.ssrf` (allow-listed host pattern and
port, every address it resolves to global unless an operator CIDR names it), so a tenant cannot
point the engine at the internal network; delivery checks again at every connection. The
signing secret is stored, returned once at creation, and never listed or logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import asyncpg
import msgspec

from engine.errors import DnsLookupError, WebhookError
from engine.events import store
from engine.events.model import KINDS
from engine.events.signature import new_secret
from engine.events.ssrf import Policy, Resolve, check_url, vet
from engine.events.store import Position
from engine.store import tenants
from engine.store.pool import Conn, transaction

log = logging.getLogger("engine.webhooks")


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as operators see it (no secret); delivery state included."""

    id: int
    tenant_id: str
    url: str
    kinds: list[str]  # empty: every kind
    active: bool
    description: str | None
    created_at: dt.datetime
    attempts: int  # failed attempts of the batch now being retried
    failing_since: dt.datetime | None
    next_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    last_success_at: dt.datetime | None
    delivered: int  # events delivered so far
    dead_letters: int  # batches given up on


class DeliveryTarget(msgspec.Struct, kw_only=True):
    """What the delivery worker holds per endpoint (secret and cursor included)."""

    id: int
    tenant_id: str
    url: str
    secret: str
    kinds: frozenset[str]
    cursor: Position
    attempts: int
    failing_since: dt.datetime | None
    next_attempt_at: dt.datetime | None


def check_kinds(kinds: Sequence[str]) -> list[str]:
    bad = sorted(set(kinds) - KINDS)
    if bad:
        raise WebhookError(
            f"unknown event kind(s) in the filter: {', '.join(bad)}",
            hint=f"known kinds: {', '.join(sorted(KINDS))}",
        )
    return sorted(set(kinds))


def _view(row: asyncpg.Record | None) -> Endpoint:
    assert row is not None
    return msgspec.convert(dict(row), Endpoint)


async def create(
    pool: asyncpg.Pool | Conn,
    *,
    tenant_id: str,
    url: str,
    policy: Policy,
    resolve: Resolve | None = None,
    kinds: Sequence[str] = (),
    secret: str | None = None,
    description: str | None = None,
) -> tuple[Endpoint, str]:
    """Add an endpoint; returns it and its signing secret (generated unless given).

    It receives events committed from now on (its cursor starts at the creating transaction).
    Without ``resolve`` only the static checks run (delivery vets the addresses anyway).
    """
    if resolve is None:
        check_url(url, policy)
    else:
        try:
            await vet(url, policy, resolve)
        except DnsLookupError as exc:
            raise WebhookError(
                f"could not resolve the webhook host: {exc.message}", hint="try again later"
            ) from None
    wanted = check_kinds(kinds)
    if not await tenants.known(pool, [tenant_id]):
        raise WebhookError(
            f"unknown tenant {tenant_id!r}", hint="add it with: engine tenants add ID"
        )
    key = secret or new_secret()
    async with transaction(pool) as conn:
        row = await store.insert_endpoint(conn, tenant_id, url, key, wanted, description)
    new_id = row["id"]
    log.info(
        "webhook endpoint added",
        extra={"tenant": tenant_id, "endpoint": new_id, "host": urlsplit(url).hostname},
    )
    return _view(row), key


async def list_endpoints(pool: asyncpg.Pool | Conn, tenant_id: str | None = None) -> list[Endpoint]:
    """Every endpoint (of one tenant when given), by id."""
    rows = await store.endpoint_rows(pool, tenant_id)
    return [_view(r) for r in rows]


async def delete(
    pool: asyncpg.Pool | Conn, endpoint_id: int, tenant_id: str | None = None
) -> Endpoint | None:
    """Remove an endpoint (and its dead letters); None when there is no such id (of that tenant)."""
    async with transaction(pool) as conn:
        row = await store.delete_endpoint(conn, endpoint_id, tenant_id)
    if row is None:
        return None
    log.info(
        "webhook endpoint removed", extra={"tenant": row["tenant_id"], "endpoint": endpoint_id}
    )
    return _view(row)


async def load_targets(conn: Conn | asyncpg.Pool) -> list[DeliveryTarget]:
    """Active endpoints with what delivery needs (worker only: includes secrets)."""
    rows = await store.target_rows(conn)
    return [
        DeliveryTarget(
            id=r["id"],
            tenant_id=r["tenant_id"],
            url=r["url"],
            secret=r["secret"],
            kinds=frozenset(r["kinds"]),
            cursor=Position(r["cx"], r["cursor_id"]),
            attempts=r["attempts"],
            failing_since=r["failing_since"],
            next_attempt_at=r["next_attempt_at"],
        )
        for r in rows
    ]


async def dead_letters(pool: asyncpg.Pool | Conn, endpoint_id: int) -> list[list[int]]:
    """The event ids of each dead-lettered batch of an endpoint, oldest first."""
    return await store.dead_letter_ids(pool, endpoint_id)
