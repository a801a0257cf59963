"""The audit log of operator actions (``oltp.audit_log``, migration 061).

Every action an operator takes through the CLI or the admin API that changes what the engine
sends or keeps — pausing or resuming a sender, erasing a recipient, purging by retention,
suppressing or unsuppressing an address, cancelling messages — is recorded here, append-only::

    await audit.record(pool, actor="cli:alice", action="gdpr.erase",
                       target="sha256:...", detail={"jobs": 3}, tenant_id="acme")

Personal data must not be written in clear: pass the pseudonym of an address
(:func:`engine.gdpr.pseudonym.pseudonym`), never the address itself.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from engine.store import audit as audit_log
from engine.store.pool import Conn


class AuditEntry(msgspec.Struct, frozen=True):
    """One recorded operator action."""

    id: int
    tenant_id: str
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    created_at: dt.datetime


def cli_actor() -> str:
    """``cli:<unix user>`` for actions taken from the command line."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid still identifies
        user = str(os.getuid())
    return f"cli:{user}"


async def record(
    pool: asyncpg.Pool | Conn,
    actor: str,
    action: str,
    target: str | None,
    detail: Mapping[str, Any] | None = None,
    *,
    tenant_id: str | None = None,
) -> int:
    """Append one entry; returns its id. Pass a connection to record inside a transaction."""
    return await audit_log.insert_entry(pool, tenant_id or "", actor, action, target, detail or {})


async def entries(
    pool: asyncpg.Pool,
    *,
    tenant_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest entries first, optionally of one tenant and/or one action."""
    rows = await audit_log.newest_entries(pool, tenant_id, action, limit)
    return [AuditEntry(**r) for r in rows]
