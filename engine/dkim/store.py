"""DKIM keys in the oltp tier (``oltp.dkim_keys``, migration 010_dkim.sql).

All SQL for DKIM keys lives here; every function takes an asyncpg connection or pool. The
owner and ``engine_worker`` see every row; tenant-scoped callers see only the rows of the tenant
trusted code set with ``engine.set_tenant`` (docs/security.md). Private keys are sealed with
:class:`~engine.dkim.crypto_box.KeyBox` before they leave the process.

Rotation by selector without a gap: :func:`insert_key` stores the new key ``pending``;
:func:`activate` (after the DNS check, see :mod:`engine.dkim.rotation`) makes it ``active`` and
retires the previous active key of the same algorithm in the same transaction, so at every
instant exactly one key per (tenant, domain, algorithm) signs.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from engine.dkim.crypto_box import KeyBox, key_aad
from engine.dkim.keys import StoredKey
from engine.dkim.sign import load_signing_key
from engine.errors import DkimKeyError, DkimKeyMissingError, StoreError

Executor = asyncpg.Connection | asyncpg.Pool

_COLUMNS = (
    "tenant_id, domain, selector, algorithm, private_key_enc, public_txt, state,"
    " created_at, activated_at, retired_at"
)


def _record(row: Any) -> StoredKey:
    return msgspec.convert(dict(row.items()), StoredKey)


async def insert_key(
    db: Executor, box: KeyBox, *, tenant_id: str, domain: str, selector: str, private_pem: bytes
) -> StoredKey:
    """Store a new key as ``pending``; DkimKeyError if the PEM is bad or the selector is taken."""
    key = load_signing_key(private_pem, domain=domain, selector=selector)
    sealed = box.seal(private_pem, aad=key_aad(tenant_id, key.domain, key.selector))
    try:
        row = await db.fetchrow(
            f"INSERT INTO oltp.dkim_keys (tenant_id, domain, selector, algorithm,"
            f" private_key_enc, public_txt) VALUES ($1, $2, $3, $4, $5, $6)"
            f" RETURNING {_COLUMNS}",
            tenant_id,
            key.domain,
            key.selector,
            key.algorithm,
            sealed,
            key.public_txt,
        )
    except asyncpg.UniqueViolationError:
        raise DkimKeyError(
            f"tenant {tenant_id} already has a DKIM key at {key.dns_name}",
            hint="rotate with a new selector (e.g. the date: s2025q3); selectors are never reused",
        ) from None
    except asyncpg.UndefinedTableError:
        raise StoreError(
            "table oltp.dkim_keys does not exist", hint="run: engine migrate"
        ) from None
    return _record(row)


async def fetch_key(db: Executor, tenant_id: str, domain: str, selector: str) -> StoredKey | None:
    """One key row, or None."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM oltp.dkim_keys"
        " WHERE tenant_id = $1 AND domain = $2 AND selector = $3",
        tenant_id,
        domain.lower(),
        selector.lower(),
    )
    return None if row is None else _record(row)


async def list_keys(
    db: Executor, *, tenant_id: str | None = None, domain: str | None = None
) -> list[StoredKey]:
    """Keys in every state, optionally for one tenant and/or domain, oldest first."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM oltp.dkim_keys"
        " WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR domain = $2)"
        " ORDER BY tenant_id, domain, created_at",
        tenant_id,
        domain.lower() if domain else None,
    )
    return [_record(r) for r in rows]


async def fetch_active(db: Executor) -> list[StoredKey]:
    """Every active key of every tenant: what the daemon loads into its KeyRing."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM oltp.dkim_keys WHERE state = 'active' ORDER BY activated_at"
    )
    return [_record(r) for r in rows]


async def activate(
    conn: asyncpg.Connection, tenant_id: str, domain: str, selector: str
) -> list[str]:
    """Make a key active and retire the earlier active key(s) of its algorithm, atomically.

    Returns the selectors retired. Call only once the key's DNS record checks out (see
    :func:`engine.dkim.rotation.promote`). Activating an already-active key changes nothing.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT algorithm, state FROM oltp.dkim_keys"
            " WHERE tenant_id = $1 AND domain = $2 AND selector = $3 FOR UPDATE",
            tenant_id,
            domain.lower(),
            selector.lower(),
        )
        if row is None:
            raise DkimKeyMissingError(
                f"tenant {tenant_id} has no DKIM key {selector.lower()}._domainkey.{domain.lower()}"
            )
        if row["state"] == "retired":
            raise DkimKeyError(
                f"DKIM key {selector}._domainkey.{domain} is retired and cannot be reactivated",
                hint="generate a key under a new selector",
            )
        if row["state"] == "active":
            return []
        await conn.execute(
            "UPDATE oltp.dkim_keys SET state = 'active', activated_at = now()"
            " WHERE tenant_id = $1 AND domain = $2 AND selector = $3",
            tenant_id,
            domain.lower(),
            selector.lower(),
        )
        retired = await conn.fetch(
            "UPDATE oltp.dkim_keys SET state = 'retired', retired_at = now()"
            " WHERE tenant_id = $1 AND domain = $2 AND algorithm = $3 AND state = 'active'"
            " AND selector <> $4 RETURNING selector",
            tenant_id,
            domain.lower(),
            row["algorithm"],
            selector.lower(),
        )
    return sorted(r["selector"] for r in retired)


async def retire(db: Executor, tenant_id: str, domain: str, selector: str) -> bool:
    """Retire one key now (e.g. compromised); True if it was pending or active."""
    status = await db.execute(
        "UPDATE oltp.dkim_keys SET state = 'retired', retired_at = now()"
        " WHERE tenant_id = $1 AND domain = $2 AND selector = $3 AND state <> 'retired'",
        tenant_id,
        domain.lower(),
        selector.lower(),
    )
    return str(status).endswith(" 1")
