"""Queue tier: operator actions on many jobs at once (cancel, hold, release, retry now).

Each action is one statement over the jobs a :class:`Selection` names, restricted to the jobs
the action can change (waiting, or in flight for cancel/hold); the same statement writes one
event per job changed (a CTE), so the changes and their events commit together and a
million-job campaign never passes through Python. The SQL text is assembled from fixed
fragments only; every value is a bind parameter.

In-flight jobs (``sending``) cannot be stopped at the relay; a cancel or hold marks them
(``cancel_requested_at`` / ``held_at``) and the outcome writer or the lease reaper applies it
when the attempt ends, unless the relay took the message (then it stays relayed).
"""

from __future__ import annotations

import enum

import asyncpg
import msgspec

from engine.store.jobs import HELD_UNTIL
from engine.store.pool import Conn


class BulkAction(enum.StrEnum):
    CANCEL = "cancel"
    HOLD = "hold"
    RELEASE = "release"
    RETRY = "retry"


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Which jobs: every given field must match (at least one must be given)."""

    job_id: int | None = None
    tenant_id: str | None = None
    campaign_id: str | None = None
    sender: str | None = None
    domain: str | None = None  # the recipient's domain

    def empty(self) -> bool:
        return all(v is None for v in msgspec.structs.astuple(self))


class BulkCount(msgspec.Struct, frozen=True):
    """``affected``: jobs the action changes now; ``in_flight``: being sent (cancel/hold apply
    when their attempt ends, unless the relay takes them)."""

    affected: int
    in_flight: int = 0


def _where(sel: Selection, args: list[object]) -> str:
    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    conds: list[str] = []
    if sel.job_id is not None:
        conds.append(f"j.id = {bind(sel.job_id)}")
    if sel.tenant_id is not None:
        conds.append(f"j.tenant_id = {bind(sel.tenant_id)}")
    if sel.campaign_id is not None:
        conds.append(f"j.campaign_id = {bind(sel.campaign_id)}")
    if sel.sender is not None:
        conds.append(f"j.sender = ANY({bind(sorted({sel.sender, sel.sender.lower()}))}::text[])")
    if sel.domain is not None:
        # The part after the last '@' (a quoted local part may hold one), case-insensitive.
        domain = sel.domain.strip().lower().rstrip(".")
        conds.append(f"lower(substring(j.recipient from '@([^@]*)$')) = {bind(domain)}")
    return " AND ".join(conds)


# Per action: the jobs it changes now (condition on j), and the assignment.
_WAITING = "j.state IN ('queued', 'deferred')"  # jobs_waiting's predicate
_SENDING = "j.state = 'sending' AND j.lease_until IS NOT NULL"  # jobs_leased_until's
_NOW: dict[BulkAction, tuple[str, str]] = {
    BulkAction.CANCEL: (
        _WAITING,
        "state = 'cancelled', finished_at = now(), pushed_at = NULL",
    ),
    BulkAction.HOLD: (
        f"{_WAITING} AND j.held_at IS NULL",
        f"held_at = now(), next_attempt_at = {HELD_UNTIL}, pushed_at = NULL",
    ),
    BulkAction.RELEASE: (
        f"{_WAITING} AND j.held_at IS NOT NULL",
        # Due now, or at its send_at when that is still to come (a held scheduled send).
        "held_at = NULL, next_attempt_at = greatest(now(), coalesce(j.send_at, now())),"
        " pushed_at = NULL",
    ),
    BulkAction.RETRY: (
        "j.state = 'deferred' AND j.held_at IS NULL AND j.next_attempt_at > now()",
        "next_attempt_at = now(), pushed_at = NULL",
    ),
}
# Per action: in-flight jobs it marks (cancel, hold) or unmarks (release).
_IN_FLIGHT: dict[BulkAction, tuple[str, str]] = {
    BulkAction.CANCEL: (
        f"{_SENDING} AND j.cancel_requested_at IS NULL",
        "cancel_requested_at = now()",
    ),
    BulkAction.HOLD: (f"{_SENDING} AND j.held_at IS NULL", "held_at = now()"),
    BulkAction.RELEASE: (f"{_SENDING} AND j.held_at IS NOT NULL", "held_at = NULL"),
}
_EVENT_KIND = {
    BulkAction.CANCEL: "cancelled",
    BulkAction.HOLD: "held",
    BulkAction.RELEASE: "released",
    BulkAction.RETRY: "retry_now",
}


async def count(pool: asyncpg.Pool | Conn, action: BulkAction, sel: Selection) -> BulkCount:
    """What :func:`apply` would change now (the dry run)."""
    args: list[object] = []
    where = _where(sel, args)
    # Two scans, each matching a partial index's predicate (jobs_waiting, jobs_leased_until),
    # so a selection without its own index (tenant, domain) reads waiting jobs only.
    affected = await pool.fetchval(
        f"SELECT count(*) FROM queue.jobs j WHERE {where} AND {_NOW[action][0]}", *args
    )
    in_flight = 0
    flight = _IN_FLIGHT.get(action)
    if flight is not None:
        in_flight = await pool.fetchval(
            f"SELECT count(*) FROM queue.jobs j WHERE {where} AND {flight[0]}", *args
        )
    return BulkCount(int(affected or 0), int(in_flight or 0))


async def apply(
    conn: Conn, action: BulkAction, sel: Selection, *, actor: str, notify_channel: str
) -> BulkCount:
    """Change the jobs ``sel`` names (one statement, with one event per job changed); run it
    inside the caller's transaction so the audit row commits with it."""
    args: list[object] = []
    where = _where(sel, args)
    cond, assign = _NOW[action]
    args.append(_EVENT_KIND[action])
    kind = f"${len(args)}"
    args.append(_actor_data(actor))
    data = f"${len(args)}::text::jsonb"
    affected = await conn.fetchval(
        f"""
        WITH changed AS (
            UPDATE queue.jobs j SET {assign}, updated_at = now()
             WHERE {where} AND {cond}
            RETURNING j.id, j.tenant_id, j.recipient, j.message_id),
        written AS (
            INSERT INTO oltp.events (tenant_id, job_id, kind, recipient, message_id, reason, data)
            SELECT c.tenant_id, c.id, {kind}, c.recipient, c.message_id, 'operator', {data}
              FROM changed c RETURNING 1)
        SELECT count(*) FROM written
        """,
        *args,
    )
    in_flight = 0
    flight = _IN_FLIGHT.get(action)
    if flight is not None:
        fargs: list[object] = []
        fwhere = _where(sel, fargs)
        status: str = await conn.execute(
            f"UPDATE queue.jobs j SET {flight[1]}, updated_at = now()"
            f" WHERE {fwhere} AND {flight[0]}",
            *fargs,
        )
        in_flight = int(status.split()[-1])
    if affected and action in (BulkAction.RELEASE, BulkAction.RETRY):
        # Wake every feeder: the jobs are due now.
        await conn.execute("SELECT pg_notify($1, '')", notify_channel)
    return BulkCount(int(affected or 0), in_flight)


def _actor_data(actor: str) -> str:
    """The event's ``data``: who acted (JSON text for a jsonb parameter)."""
    return msgspec.json.encode({"by": actor}).decode()
