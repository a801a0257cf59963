"""Stop campaign Y: cancel, hold, release or retry now every waiting job a selection names.

One service for the CLI (``engine messages cancel|hold|release|retry``) and the admin API
(``POST /v1/messages/actions``): a dry run counts, a real run changes the jobs, writes one event
per job changed and one audit row, in one transaction.

What each action does (the job states are a contract, so a hold is a flag, not a state):

- **cancel**: queued/deferred jobs become ``cancelled`` at once; the dispatcher's claim only
  takes queued/deferred jobs, so a stream entry already in Redis is skipped. Jobs in flight
  finish their attempt: relayed stays relayed, anything else ends ``cancelled``.
- **hold**: queued/deferred jobs are not claimed until released (they keep their state and
  their maximum age); jobs in flight are held when their attempt ends, unless relayed.
- **release**: held jobs become due at once (the feeder is woken).
- **retry**: deferred, unheld jobs waiting for their next attempt become due at once.
"""

from __future__ import annotations

import logging

import asyncpg
import msgspec

from engine import audit
from engine.errors import UsageError
from engine.store import message_actions
from engine.store.message_actions import BulkAction, Selection
from engine.store.notify import NOTIFY_CHANNEL

log = logging.getLogger("engine.messages")


class BulkResult(msgspec.Struct, frozen=True):
    """``affected``: jobs changed (dry run: that would be); ``in_flight``: being sent now
    (cancel/hold apply when their attempt ends, unless the relay accepts them)."""

    action: str
    dry_run: bool
    affected: int
    in_flight: int
    selection: Selection


def describe(sel: Selection) -> str:
    """``campaign=spring tenant=acme``: the selection as the audit target and CLI line."""
    return " ".join(f"{k}={v}" for k, v in msgspec.structs.asdict(sel).items() if v is not None)


async def run(
    pool: asyncpg.Pool,
    action: BulkAction,
    sel: Selection,
    *,
    actor: str,
    dry_run: bool = False,
) -> BulkResult:
    """Count (``dry_run``) or apply ``action`` to the jobs of ``sel``; refuses an empty one."""
    if sel.empty():
        raise UsageError(
            f"{action} needs a selection",
            hint="give a job id or at least one of --campaign, --tenant, --sender, --domain",
        )
    if dry_run:
        n = await message_actions.count(pool, action, sel)
        return BulkResult(action.value, True, n.affected, n.in_flight, sel)
    async with pool.acquire() as conn, conn.transaction():
        n = await message_actions.apply(
            conn, action, sel, actor=actor, notify_channel=NOTIFY_CHANNEL
        )
        await audit.record(
            conn,
            actor,
            f"messages.{action.value}",
            describe(sel),
            {"affected": n.affected, "in_flight": n.in_flight},
            tenant_id=sel.tenant_id,
        )
    log.info(
        "bulk message action",
        extra={
            "action": action.value,
            "selection": describe(sel),
            "affected": n.affected,
            "in_flight": n.in_flight,
            "actor": actor,
        },
    )
    return BulkResult(action.value, False, n.affected, n.in_flight, sel)
