"""Moves the olap outbox (``queue.olap_outbox``) to the olap server, exactly once.

Only runs with ``[database.olap] dsn`` naming another server. One round, under an advisory
lock on the olap server so that one daemon drains at a time:

1. in one olap transaction: drop the "applied" marks whose outbox rows are gone; read the
   oldest outbox rows (from the main server); mark them applied (``olap.outbox_applied``,
   ``ON CONFLICT DO NOTHING``) and add the counts of the rows that were not marked before;
   commit;
2. delete those rows from the outbox (main server).

A crash between the two commits leaves rows in the outbox that are marked applied on the olap
server: the next round reads them, finds them marked, counts nothing and deletes them. A crash
before the olap commit applies nothing. The olap server down: the round fails, the outbox grows
on the main server (sending goes on), and the next round after it is back catches up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from engine.periodic import Periodic
from engine.store import olap_outbox as store

log = logging.getLogger("engine.olap_drain")

#: The advisory lock id on the olap server ("olap").
LOCK_KEY = 0x6F6C6170
#: Outbox rows per round (one row is one tenant's counts of one outcome batch).
BATCH = 500
#: How often the outbox is drained when it is empty (a backlog is drained at once).
INTERVAL_S = 1.0


class Drainer:
    """Drains ``main``'s outbox into ``olap``. ``between_commits``: called after the olap
    commit and before the outbox delete (tests make it raise to crash there)."""

    def __init__(
        self,
        main: asyncpg.Pool,
        olap: asyncpg.Pool,
        *,
        batch: int = BATCH,
        between_commits: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.main = main
        self.olap = olap
        self.batch = batch
        self.between_commits = between_commits

    async def round(self) -> int:
        """Drain one batch; returns how many outbox rows it took (0: empty or busy)."""
        async with self.olap.acquire() as conn, conn.transaction():
            if not await store.lock(conn, LOCK_KEY):
                return 0  # another daemon drains now
            marks = await store.applied(conn, self.batch * 4)
            if marks:
                still = await store.existing(self.main, marks)
                gone = [k for k in marks if k not in still]
                if gone:
                    await store.forget(conn, gone)
            rows = await store.pending(self.main, self.batch)
            if not rows:
                return 0
            keys = [(r.tenant_id, r.id) for r in rows]
            fresh = await store.claim(conn, keys)
            await store.apply(conn, store.merge(r for r in rows if (r.tenant_id, r.id) in fresh))
        if self.between_commits is not None:
            await self.between_commits()
        await store.delete(self.main, keys)
        if len(fresh) < len(keys):
            log.info(
                "olap outbox rows already applied: deleted without counting",
                extra={"n": len(keys) - len(fresh)},
            )
        return len(keys)

    async def drain(self) -> int:
        """Rounds until the outbox is empty (or another daemon holds the lock)."""
        total = 0
        while True:
            n = await self.round()
            total += n
            if n < self.batch:
                return total

    def task(self) -> Periodic:
        """The periodic drain, with a final one when the daemon stops."""

        async def run() -> float | None:
            n = await self.round()
            return 0.0 if n >= self.batch else None

        return Periodic(
            "olap-outbox", run, INTERVAL_S, retry_s=INTERVAL_S, max_backoff_s=10.0, on_stop=True
        )


__all__ = ["Drainer"]
