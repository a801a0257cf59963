"""Pausing a sender: the one set of functions the CLI, the admin API, compliance and shaping call.

``oltp.senders.paused`` is the truth; shaping's Redis pause key (when shaping runs) is a cache of
it that lets every instance see an automatic pause at once and keeps the reputation scripts from
pausing a sender twice. Each pause and resume writes the ``sender_paused`` / ``sender_resumed``
event the tenant sees, and an audit row when an operator (``actor``) took the action.

The send path checks a pause in one place: the dispatcher's :class:`PausedSenders`, a view of
the truth refreshed every ``REFRESH_S``; a paused sender's jobs are held for :func:`hold_s` and
released by :func:`resume` just after the next refresh.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import asyncpg

from engine import audit, events
from engine.config import Config
from engine.store import quota
from engine.store import senders as sender_store
from engine.store.senders import SenderView

log = logging.getLogger("engine.senders")

#: How stale the dispatcher's view of paused senders may be (seconds).
REFRESH_S = 5.0
#: Held jobs of a resumed sender become due this long after the resume: just past one refresh.
RELEASE_GRACE_S = REFRESH_S + 1.0
OPERATOR_REASON = "paused by an operator"


class PauseCache(Protocol):
    """Shaping's Redis copy of the pause (:class:`~engine.shaping.shaper.Shaper`)."""

    async def pause(self, tenant_id: str, sender: str, message: str = ...) -> bool: ...

    async def resume(self, tenant_id: str, sender: str) -> bool: ...


def hold_s(cfg: Config) -> float:
    """How far out a paused sender's jobs are put back (``[shaping] paused_retry_s``)."""
    return cfg.shaping.paused_retry_s


async def _record(
    pool: asyncpg.Pool,
    sender: SenderView,
    kind: str,
    reason: str | None,
    actor: str | None,
    detail: dict[str, object],
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await events.write(
            conn,
            [
                events.Event(
                    tenant_id=sender.tenant_id,
                    kind=kind,
                    reason=reason,
                    data={"sender": sender.address, **detail},
                )
            ],
        )
        if actor is not None:
            action = "sender.pause" if kind == "sender_paused" else "sender.resume"
            await audit.record(
                conn,
                actor,
                action,
                sender.address,
                {"reason": reason} if reason else {},
                tenant_id=sender.tenant_id,
            )


async def pause(
    pool: asyncpg.Pool,
    tenant_id: str,
    address: str,
    reason: str = OPERATOR_REASON,
    *,
    actor: str | None,
    cache: PauseCache | None = None,
    detail: dict[str, object] | None = None,
    if_running: bool = False,
) -> SenderView | None:
    """Pause a sender: its jobs are held from the dispatcher's next refresh. None: unknown.

    ``actor`` names the operator (``cli:<user>``, ``admin-api``) and adds an audit row; automatic
    pauses (shaping, compliance) pass None. ``detail`` goes into the event (the rates behind an
    automatic pause). ``if_running``: a sender already paused is left as it is (its reason, no
    second event), as shaping's auto-pause does with an operator's or a compliance pause.
    """
    sender, was_paused = await sender_store.pause(
        pool, tenant_id, address, reason, keep_reason=if_running
    )
    if sender is None or (was_paused and if_running):
        return sender
    if cache is not None:
        await cache.pause(sender.tenant_id, sender.address, reason)
    await _record(pool, sender, "sender_paused", reason, actor, detail or {})
    log.info(
        "sender paused",
        extra={"tenant": sender.tenant_id, "sender": sender.address, "reason": reason,
               "actor": actor or "engine"},
    )  # fmt: skip
    return sender


async def resume(
    pool: asyncpg.Pool,
    tenant_id: str,
    address: str,
    *,
    actor: str | None,
    cache: PauseCache | None = None,
    grace_s: float = RELEASE_GRACE_S,
) -> tuple[SenderView | None, int]:
    """Lift a pause (operator's, shaping's or compliance's); returns (sender, jobs released).

    The held jobs become due in ``grace_s``; the cache also starts the sender's reputation
    window afresh, or the same counts would pause it again at the next delivery.
    """
    sender, released = await sender_store.resume(pool, tenant_id, address, grace_s=grace_s)
    if sender is None:
        return None, 0
    if cache is not None:
        await cache.resume(sender.tenant_id, sender.address)
    await _record(pool, sender, "sender_resumed", None, actor, {"released": released})
    log.info(
        "sender resumed",
        extra={"tenant": sender.tenant_id, "sender": sender.address, "released": released,
               "actor": actor or "engine"},
    )  # fmt: skip
    return sender, released


async def find(pool: asyncpg.Pool, address: str, tenant_id: str | None = None) -> list[SenderView]:
    """The sender rows for an address (one per tenant using it, or just ``tenant_id``'s)."""
    return await sender_store.find(pool, address, tenant_id)


class PausedSenders:
    """The dispatcher's view of paused senders and of tenants over their daily quota,
    refreshed from the oltp tier every ``ttl_s`` (two cheap queries, never per message)."""

    def __init__(
        self, pool: asyncpg.Pool, ttl_s: float = REFRESH_S, olap: asyncpg.Pool | None = None
    ) -> None:
        self.pool = pool
        self.olap = olap  # the olap tier's pool when it lives on another server
        self.ttl_s = ttl_s
        self._at = 0.0
        self._paused: set[tuple[str, str]] = set()
        self.over_quota: set[str] = set()

    async def refresh(self) -> None:
        """Re-read the paused senders and the tenants over quota if the view is stale."""
        if time.monotonic() - self._at > self.ttl_s:
            self._paused = await sender_store.paused(self.pool)
            self.over_quota = await quota.over_quota(self.pool, self.olap)
            self._at = time.monotonic()

    def is_paused(self, tenant_id: str, sender: str) -> bool:
        """Whether the sender was paused at the last refresh."""
        return (tenant_id, sender) in self._paused
