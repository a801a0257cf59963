"""Operator actions on quarantined inbound messages (the CLI and the admin API call these).

A message is quarantined when its parse used up the CPU budget, crashed the parse worker twice
or made the parser raise (:mod:`engine.inbound.listener`). It stays stored and is never parsed
again on its own; :func:`requeue` clears the mark and the running daemon's sweep parses it again
within ``[inbound] sweep_interval_s`` (at the next start if no daemon runs).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from engine import audit
from engine.store import inbound as inbound_store
from engine.store.inbound import Quarantined


class RequeueResult(msgspec.Struct, frozen=True):
    """What :func:`requeue` did with each id asked for."""

    requeued: list[int]  # were quarantined: will be parsed again
    processed: list[int]  # already applied: nothing to do
    pending: list[int]  # not quarantined, waiting for the parser anyway
    missing: list[int]  # no such stored message (or purged by retention)


async def requeue(
    pool: asyncpg.Pool, ids: Sequence[int], actor: str, *, audit_pool: asyncpg.Pool | None = None
) -> RequeueResult:
    """Clear the quarantine mark of ``ids`` (one audit entry per message requeued). ``pool``
    is the content tier's; ``audit_pool`` the oltp tier's when content lives apart."""
    wanted = sorted(set(ids))
    requeued = await inbound_store.requeue(pool, wanted)
    states = await inbound_store.states(pool, [i for i in wanted if i not in set(requeued)])
    for inbound_id in requeued:
        await audit.record(audit_pool or pool, actor, "inbound.requeue", str(inbound_id))
    return RequeueResult(
        requeued=requeued,
        processed=[i for i, s in sorted(states.items()) if s == "processed"],
        pending=[i for i, s in sorted(states.items()) if s == "pending"],
        missing=[i for i in wanted if i not in states and i not in set(requeued)],
    )


async def listing(pool: asyncpg.Pool, limit: int = 100) -> list[Quarantined]:
    """The most recently quarantined messages still waiting for an operator."""
    return await inbound_store.quarantined(pool, limit)
