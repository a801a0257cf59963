"""Batched outcome writer: job states + OLAP counters in one transaction, then XACK.

The stream entry of a job is acknowledged only after its outcome is committed (DESIGN §3). When
PostgreSQL is unreachable the batch is kept and retried; nothing is acknowledged meanwhile, so a
crash at any point leaves the job either committed or still pending on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

import asyncpg
import msgspec

from engine import events
from engine.queue.streams import Entry, Streams
from engine.store import facts, olap_outbox, stats
from engine.store import jobs as job_store

log = logging.getLogger("engine.outcomes")

_STAT_COLUMN = {"relayed": "relayed", "deferred": "deferred", "failed": "failed"}


class Pending(msgspec.Struct):
    row: job_store.OutcomeRow
    entries: list[Entry]
    stat_key: tuple[str, str, str]  # tenant, sender, provider
    attempted: bool
    recipient: str | None = None
    campaign_id: str | None = None
    created_at: dt.datetime | None = None  # enqueued at: the start of time-to-relay


class OutcomeWriter:
    """Collects outcomes and flushes them every ``flush_ms`` or ``batch`` outcomes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        streams: Streams,
        owner: str,
        *,
        flush_ms: float,
        batch: int,
        on_done: Callable[[int], None],
        on_written: Callable[[list[int]], None] | None = None,
        olap_outbox: bool = False,
    ) -> None:
        self.pool = pool
        self.streams = streams
        self.owner = owner
        self.flush_s = flush_ms / 1000
        self.batch = batch
        self.on_done = on_done
        self.on_written = on_written  # the job ids whose outcomes are committed (or moot)
        # The olap tier on another server: counts go to the outbox in this transaction
        # (engine/olap_drain.py moves them), instead of into olap.* directly.
        self.olap_outbox = olap_outbox
        self._pending: list[Pending] = []
        self._acks: list[Entry] = []
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(
        self,
        row: job_store.OutcomeRow,
        entries: list[Entry],
        stat_key: tuple[str, str, str],
        *,
        attempted: bool = True,
        recipient: str | None = None,
        campaign_id: str | None = None,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Queue one outcome; ``entries`` are acked once it is committed."""
        self._pending.append(
            Pending(row, entries, stat_key, attempted, recipient, campaign_id, created_at)
        )
        self._idle.clear()
        if len(self._pending) >= self.batch:
            self._kick.set()

    def ack_only(self, entries: list[Entry]) -> None:
        """Entries whose job needs no write (stale duplicates): ack with the next flush."""
        self._acks.extend(entries)
        self._idle.clear()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write everything pending; retries until PostgreSQL accepts it."""
        while self._pending or self._acks:
            items, self._pending = self._pending, []
            acks, self._acks = self._acks, []
            delay = 0.2
            while True:
                try:
                    await self._write(items)
                    break
                except Exception as e:  # this task must never die (see below)
                    # Any error is retried: if this task died, in-flight slots would never be
                    # released and the dispatcher would wait for room forever, silently.
                    log.warning(
                        "outcome write failed; retrying",
                        extra={"error": repr(e), "n": len(items)},
                    )
                    await asyncio.sleep(delay)
                    # At most 1 s: the dispatcher waits for these slots, so the first write
                    # after an outage must come soon after PostgreSQL is back.
                    delay = min(delay * 2, 1.0)
            if self.on_written is not None:
                self.on_written([p.row.job_id for p in items])
            entries = [e for p in items for e in p.entries] + acks
            delay = 0.2
            while True:
                try:
                    await self.streams.ack(entries)
                    break
                except Exception as exc:  # Redis down: the reconciler repairs; retry a while
                    log.warning("ack failed; retrying", extra={"error": str(exc)})
                    if "NOGROUP" in str(exc):
                        break  # Redis lost the group and these entries with it
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    if delay >= 5.0:
                        break  # entries stay pending; XAUTOCLAIM finds them, claim skips them
            self.on_done(len(items))
        self._idle.set()

    async def _write(self, items: list[Pending]) -> None:
        if not items:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            updated = await job_store.write_outcomes(
                conn, self.owner, [p.row for p in items], [p.stat_key[2] for p in items]
            )
            written = {r["id"] for r in updated}
            counts = []
            for p in items:
                if p.row.job_id not in written:
                    continue
                if p.attempted:
                    counts.append((p.stat_key, "sent", 1))
                column = _STAT_COLUMN.get(p.row.state)
                if column:
                    counts.append((p.stat_key, column, 1))
            found = _facts([p for p in items if p.row.job_id in written])
            if self.olap_outbox:
                await olap_outbox.put(conn, counts, *found)
            else:
                await stats.add(conn, counts)
                await facts.add(conn, *found)
            # The event of each state change commits with it (the publisher and webhook worker
            # read oltp.events in commit order; the send path never waits on Redis or HTTP).
            await events.write(
                conn,
                events.from_outcome_rows(
                    [dict(r) for r in updated],
                    [
                        events.OutcomeEventInput(
                            p.row.job_id,
                            p.row.message_id,
                            p.recipient,
                            p.row.reply,
                            p.row.code,
                            p.row.status,
                            p.row.node,
                            hold=p.row.undo_attempt,
                            attempt=p.row.attempts,
                            selector=p.row.selector,
                            relay_ms=p.row.relay_ms,
                        )
                        for p in items
                    ],
                ),
            )
        lost = len(items) - len(written)
        if lost:
            log.info("outcomes skipped: lease lost to another worker", extra={"n": lost})

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically until ``stop``; then a final flush."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self.flush_s)
            self._kick.clear()
            await self.flush()
        await self.flush()

    async def drained(self) -> None:
        await self._idle.wait()


def _facts(items: list[Pending]) -> tuple[list[facts.Fact], list[facts.Latency]]:
    """The OLAP facts of written outcomes: relayed, deferred and failed attempts (and jobs
    failed without one, e.g. a template that cannot render) on today's date, and each relayed
    job's time from enqueue to relay."""
    today = dt.datetime.now(dt.UTC).date()
    now = time.time()
    found: list[facts.Fact] = []
    latencies: list[facts.Latency] = []
    for p in items:
        outcome = _STAT_COLUMN.get(p.row.state)
        if outcome is None or not (p.attempted or outcome == "failed"):
            continue  # a hold is no attempt; a job failed before relay (render error) counts
        tenant, sender, provider = p.stat_key
        campaign = p.campaign_id or ""
        found.append(facts.Fact(tenant, today, campaign, sender, provider, outcome))
        if outcome == "relayed" and p.created_at is not None:
            took_ms = (now - p.created_at.timestamp()) * 1000
            latencies.append(facts.Latency(tenant, today, campaign, "relay", took_ms))
    return found, latencies


__all__ = ["OutcomeWriter"]
