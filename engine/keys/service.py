"""API key operations, one function each, called by ``engine keys`` and by ``/v1/keys``.

Every change is written to the audit log (engine/audit.py) with its actor and tenant, in the
same transaction as the change. :class:`Authenticator` turns a presented key into a
:class:`~engine.keys.token.Principal`; it records a key's last use at most once per
``touch_every_s`` (one UPDATE for all keys used meanwhile), never once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from engine import audit
from engine.errors import ApiKeyError
from engine.keys import store, token
from engine.keys.store import KeyView
from engine.keys.token import Principal, Scope
from engine.store import tenants
from engine.store.pool import Conn, transaction

log = logging.getLogger("engine.keys")

TOUCH_EVERY_S = 60.0
MAX_NAME = 200


def _scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        names = "|".join(s.value for s in Scope)
        raise ApiKeyError(f"unknown scope {value!r}; use {names}") from None


def _prefix(value: str) -> str:
    prefix = token.parse_prefix(value)
    if prefix is None:
        raise ApiKeyError(
            f"{value[:40]!r} is not a key prefix",
            hint="the 12 hex digits after pm_live_, as engine keys list shows them",
        )
    return prefix


async def create(
    pool: asyncpg.Pool | Conn, tenant_id: str, scope: str, *, actor: str, name: str = ""
) -> tuple[str, KeyView]:
    """A new key of ``tenant_id``: (the key, shown once; its stored view)."""
    wanted = _scope(scope)
    if len(name) > MAX_NAME or "\x00" in name:
        raise ApiKeyError(f"a key name is at most {MAX_NAME} characters, without NUL")
    new = token.generate()
    async with transaction(pool) as conn:
        if not await tenants.known(conn, [tenant_id]):
            raise ApiKeyError(
                f"unknown tenant {tenant_id!r}",
                status=404,
                hint=f"add it with: engine tenants add {tenant_id}",
            )
        view = await store.insert(
            conn,
            prefix=new.prefix,
            tenant_id=tenant_id,
            scope=wanted.value,
            digest=new.digest,
            name=name,
            created_by=actor,
        )
        await audit.record(
            conn, actor, "key.create", new.prefix, {"scope": wanted.value}, tenant_id=tenant_id
        )
    log.info("api key created", extra={"tenant": tenant_id, "key": new.prefix, "actor": actor})
    return new.key, view


async def listing(
    pool: asyncpg.Pool | Conn, tenant_id: str | None, *, include_revoked: bool = False
) -> list[KeyView]:
    """Keys of one tenant (None: every tenant), without their digests."""
    return await store.listing(pool, tenant_id, include_revoked=include_revoked)


async def revoke(
    pool: asyncpg.Pool | Conn, prefix: str, *, actor: str, tenant_id: str | None = None
) -> KeyView:
    """Revoke a key now (of ``tenant_id`` only, when given: another tenant's key is unknown)."""
    wanted = _prefix(prefix)
    async with transaction(pool) as conn:
        view = await store.revoke(conn, wanted, tenant_id)
        if view is None:
            raise ApiKeyError(f"no API key {wanted}", status=404)
        await audit.record(conn, actor, "key.revoke", wanted, {}, tenant_id=view.tenant_id)
    log.info("api key revoked", extra={"tenant": view.tenant_id, "key": wanted, "actor": actor})
    return view


async def rotate(
    pool: asyncpg.Pool | Conn, prefix: str, *, actor: str, tenant_id: str | None = None
) -> tuple[str, KeyView]:
    """A new key with the old one's tenant, scope and name; the old one is revoked at once."""
    wanted = _prefix(prefix)
    new = token.generate()
    async with transaction(pool) as conn:
        old = await store.get(conn, wanted, tenant_id)
        if old is None or old.revoked_at is not None:
            raise ApiKeyError(f"no active API key {wanted}", status=404)
        view = await store.insert(
            conn,
            prefix=new.prefix,
            tenant_id=old.tenant_id,
            scope=old.scope,
            digest=new.digest,
            name=old.name,
            created_by=actor,
        )
        await store.revoke(conn, wanted, old.tenant_id, replaced_by=new.prefix)
        await audit.record(
            conn, actor, "key.rotate", wanted, {"new": new.prefix}, tenant_id=old.tenant_id
        )
    log.info(
        "api key rotated",
        extra={"tenant": old.tenant_id, "key": wanted, "new": new.prefix, "actor": actor},
    )
    return new.key, view


class Authenticator:
    """Presented key → :class:`Principal` (or None), with cheap last-used bookkeeping."""

    def __init__(self, pool: asyncpg.Pool, *, touch_every_s: float = TOUCH_EVERY_S) -> None:
        self._pool = pool
        self._touch_every_s = touch_every_s
        self._touched: dict[str, float] = {}  # prefix → monotonic time of the last recorded use
        self._pending: set[asyncio.Task[None]] = set()

    async def authenticate(self, presented: str) -> Principal | None:
        """The key's principal when it is known, not revoked and matches; else None."""
        prefix = token.prefix_of(presented)
        stored = await store.lookup(self._pool, prefix) if prefix is not None else None
        if stored is None:
            token.matches(presented, bytes(32))  # the same work whether or not the prefix exists
            return None
        if not token.matches(presented, stored.digest) or stored.revoked:
            return None
        self._note_use(stored.prefix)
        return Principal(
            tenant_id=stored.tenant_id, scope=Scope(stored.scope), prefix=stored.prefix
        )

    def _note_use(self, prefix: str) -> None:
        now = time.monotonic()
        last = self._touched.get(prefix)
        if last is not None and now - last < self._touch_every_s:
            return
        self._touched[prefix] = now
        task = asyncio.get_running_loop().create_task(self._touch(prefix))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _touch(self, prefix: str) -> None:
        try:
            await store.touch(self._pool, [prefix])
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # bookkeeping only: the request itself went on
            log.warning("api key last-used update failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """Wait for the last-used updates under way (before the pool closes)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
