"""Senders (oltp tier): look up, pause and resume a sender address; list the paused ones.

``oltp.senders.paused`` is the one truth of whether a sender may send
(:mod:`engine.senders.service` is the only writer). The dispatcher reads the paused set every
few seconds and holds a paused sender's jobs (back to the queue, reply "sender is paused", not
counted as an attempt). Resuming clears the flag and makes those held jobs due again after
``grace_s`` instead of the rest of their hold: the grace must outlast the dispatcher's cached
view of paused senders, or a released job would be claimed while the cache still says "paused"
and held for another full hold period.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from engine.store.notify import wake_feeder
from engine.store.pool import Conn

# The hold reasons the dispatcher writes to ``last_reply`` for a paused sender (its own pause
# check, and the shaping level "paused"); resume releases only jobs held for these reasons, so
# scheduled sends and retry back-offs keep their times.
PAUSE_HOLD_REPLIES = ("sender is paused", "held by shaping limit paused")
# The second one is what versions with a pause level in the shaping limiter wrote; jobs held
# that way may still be in the queue after an upgrade.


class SenderView(msgspec.Struct, frozen=True):
    """A sender address of one tenant and whether it may send."""

    tenant_id: str
    address: str
    domain: str
    paused: bool
    paused_reason: str | None


_COLUMNS = "tenant_id, address, domain, paused, paused_reason"


def _view(r: asyncpg.Record) -> SenderView:
    return SenderView(r["tenant_id"], r["address"], r["domain"], r["paused"], r["paused_reason"])


async def find(pool: asyncpg.Pool, address: str, tenant_id: str | None = None) -> list[SenderView]:
    """The sender rows for an address (one per tenant using it, or just ``tenant_id``'s)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM oltp.senders WHERE address = lower($1)"
        " AND ($2::text IS NULL OR tenant_id = $2) ORDER BY tenant_id",
        address,
        tenant_id,
    )
    return [_view(r) for r in rows]


async def pause(
    pool: asyncpg.Pool, tenant_id: str, address: str, reason: str, *, keep_reason: bool = False
) -> tuple[SenderView | None, bool]:
    """Pause a sender; returns (sender or None if unknown, whether it was paused before).

    ``keep_reason``: a sender already paused keeps the reason it was paused for.
    """
    cols = ", ".join(f"s.{c}" for c in _COLUMNS.split(", "))
    row = await pool.fetchrow(
        "UPDATE oltp.senders s SET paused = true,"
        " paused_reason = CASE WHEN old.paused AND $4 THEN old.paused_reason ELSE $3 END"
        " FROM oltp.senders old WHERE s.tenant_id = $1 AND s.address = lower($2)"
        " AND old.tenant_id = s.tenant_id AND old.address = s.address"
        f" RETURNING {cols}, old.paused AS was_paused",
        tenant_id,
        address,
        reason,
        keep_reason,
    )
    return (None, False) if row is None else (_view(row), bool(row["was_paused"]))


async def paused(pool: asyncpg.Pool) -> set[tuple[str, str]]:
    """Every paused (tenant, address): a partial index keeps this cheap (migration 072)."""
    rows = await pool.fetch("SELECT tenant_id, address FROM oltp.senders WHERE paused")
    return {(r["tenant_id"], r["address"]) for r in rows}


async def resume(
    pool: asyncpg.Pool, tenant_id: str, address: str, *, grace_s: float = 0.0
) -> tuple[SenderView | None, int]:
    """Lift a pause; held jobs become due in ``grace_s``. Returns (sender, jobs released)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE oltp.senders SET paused = false, paused_reason = NULL"
            f" WHERE tenant_id = $1 AND address = lower($2) RETURNING {_COLUMNS}",
            tenant_id,
            address,
        )
        if row is None:
            return None, 0
        res: str = await conn.execute(
            "UPDATE queue.jobs SET next_attempt_at = now() + make_interval(secs => $4),"
            " updated_at = now()"
            " WHERE tenant_id = $1 AND sender = lower($2) AND state IN ('queued', 'deferred')"
            " AND pushed_at IS NULL AND next_attempt_at > now() + make_interval(secs => $4)"
            " AND last_reply = ANY($3::text[])",
            tenant_id,
            address,
            list(PAUSE_HOLD_REPLIES),
            grace_s,
        )
        released = int(res.split()[-1])
        if released:
            await wake_feeder(conn)
    return _view(row), released


async def ensure(conn: Conn, pairs: Sequence[tuple[str, str]]) -> None:
    """Create the (tenant, address) senders not seen before (a new sender starts its warm-up)."""
    await conn.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain)"
        " SELECT t, a, split_part(a, '@', 2) FROM unnest($1::text[], $2::text[]) AS u(t, a)"
        " ON CONFLICT DO NOTHING",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
