"""Sending domains: register, verify (DNS TXT or the operator's word), list, remove.

The CLI (``engine domains``) and the admin API (``/v1/domains``) call these. DNS goes through
the engine's seam (:data:`Resolve`, :mod:`engine.resolver`), handed in by the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from engine.errors import DomainError, EngineError
from engine.psl import parent_domains
from engine.store import domains as store
from engine.store import tenants
from engine.tenancy.rules import dkim_public_key, normalise, record_name, record_value

log = logging.getLogger("engine.domains")

Resolve = Callable[[str, str], Awaitable[list[str]]]


class Domain(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant's sending domain as operators see it; ``record`` is the TXT proof to publish."""

    tenant_id: str
    domain: str
    verified: bool
    verified_by: str | None  # "dns" (TXT token) | "dkim" (a key of ours published) | "operator"
    verified_at: dt.datetime | None
    created_at: dt.datetime
    record_name: str
    record_value: str


def _view(row: store.DomainRow) -> Domain:
    return Domain(
        tenant_id=row.tenant_id,
        domain=row.domain,
        verified=row.verified_at is not None,
        verified_by=row.verified_by,
        verified_at=row.verified_at,
        created_at=row.created_at,
        record_name=record_name(row.domain),
        record_value=record_value(row.token),
    )


async def _verify(pool: asyncpg.Pool, row: store.DomainRow, by: str) -> Domain:
    clash = await store.conflicts(pool, row.tenant_id, row.domain, list(parent_domains(row.domain)))
    if clash:
        other = ", ".join(d for _, d in clash)
        raise DomainError(
            f"{row.domain} overlaps {other}, verified by another tenant",
            hint="a domain and its subdomains belong to one tenant; ask the operator",
        )
    try:
        done = await store.mark_verified(pool, row.tenant_id, row.domain, by)
    except asyncpg.UniqueViolationError:
        raise DomainError(f"{row.domain} is already verified by another tenant") from None
    assert done is not None
    log.info(
        "sending domain verified", extra={"tenant": row.tenant_id, "domain": row.domain, "by": by}
    )
    return _view(done)


async def add(pool: asyncpg.Pool, tenant_id: str, domain: str, *, verified: bool = False) -> Domain:
    """Register ``domain`` for ``tenant_id``; ``verified``: the operator vouches, no DNS check."""
    name = normalise(domain)
    if not await tenants.known(pool, [tenant_id]):
        raise DomainError(
            f"unknown tenant {tenant_id!r}", hint="add it with: engine tenants add ID"
        )
    existed = await store.get(pool, tenant_id, name) is not None
    row = await store.add(pool, tenant_id, name, secrets.token_urlsafe(24))
    if verified and row.verified_at is None:
        try:
            return await _verify(pool, row, "operator")
        except DomainError:
            if not existed:  # a refused request leaves nothing behind
                await store.remove(pool, tenant_id, name)
            raise
    log.info("sending domain registered", extra={"tenant": tenant_id, "domain": name})
    return _view(row)


async def verify(
    pool: asyncpg.Pool, tenant_id: str, domain: str, resolve: Resolve | None
) -> Domain:
    """Look for the TXT proof of a registered domain; verified when it is published.

    ``resolve`` None (an admin server built without the DNS seam): refused with a hint.
    """
    name = normalise(domain)
    row = await store.get(pool, tenant_id, name)
    if row is None:
        raise DomainError(
            f"{name} is not registered for tenant {tenant_id}",
            hint=f"engine domains add --tenant {tenant_id} {name}",
        )
    if row.verified_at is not None:
        return _view(row)
    where, wanted = record_name(name), record_value(row.token)
    if resolve is None:
        raise DomainError(
            "no DNS resolver here to check the record",
            hint=f"engine domains verify --tenant {tenant_id} {name}",
        )
    try:
        found = await resolve(where, "TXT")
    except EngineError as exc:
        raise DomainError(
            f"could not look up {where} TXT: {exc.message}", hint="try again"
        ) from None
    if wanted in [t.strip() for t in found]:
        return await _verify(pool, row, "dns")
    if await _dkim_published(pool, tenant_id, name, resolve):
        return await _verify(pool, row, "dkim")
    raise DomainError(
        f"{where} TXT does not hold {wanted!r} (found {len(found)} record(s)), and no DKIM key"
        f" of tenant {tenant_id} for {name} is published",
        hint=f'publish {where} TXT "{wanted}", wait for DNS, then verify again',
    )


async def _dkim_published(pool: asyncpg.Pool, tenant_id: str, name: str, resolve: Resolve) -> bool:
    """Is one of the tenant's stored DKIM keys for ``name`` published at its selector? Only we
    hold the private half, so the domain's DNS publishing it is the domain vouching for us."""
    for selector, txt in await store.tenant_dkim_records(pool, tenant_id, name):
        ours = dkim_public_key(txt)
        try:
            answers = await resolve(f"{selector}._domainkey.{name}", "TXT")
        except EngineError:
            continue
        if ours is not None and any(dkim_public_key(a) == ours for a in answers):
            return True
    return False


async def list_domains(pool: asyncpg.Pool, tenant_id: str | None = None) -> list[Domain]:
    """Every sending domain (of one tenant when given)."""
    return [_view(r) for r in await store.list_domains(pool, tenant_id)]


async def remove(pool: asyncpg.Pool, tenant_id: str, domain: str) -> bool:
    """Unregister; its mail is refused at enqueue from now on (queued jobs are not touched)."""
    gone = await store.remove(pool, tenant_id, normalise(domain))
    if gone:
        log.info("sending domain removed", extra={"tenant": tenant_id, "domain": domain})
    return gone
