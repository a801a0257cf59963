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


# Per action: which jobs it changes now (waiting ones) and how, then which jobs in flight it
# marks (cancel, hold) or unmarks (release) and how.
_WAITING = "j.state IN ('queued', 'deferred')"  # jobs_waiting's predicate
_SENDING = "j.state = 'sending' AND j.lease_until IS NOT NULL"  # jobs_leased_until's
_NOW: dict[BulkAction, tuple[str, dict[str, str]]] = {
    BulkAction.CANCEL: (
        _WAITING,
        {"state": "'cancelled'", "finished_at": "now()", "pushed_at": "NULL::timestamptz"},
    ),
    BulkAction.HOLD: (
        f"{_WAITING} AND j.held_at IS NULL",
        {"held_at": "now()", "next_attempt_at": HELD_UNTIL, "pushed_at": "NULL::timestamptz"},
    ),
    BulkAction.RELEASE: (
        f"{_WAITING} AND j.held_at IS NOT NULL",
        # Due now, or at its send_at when that is still to come (a held scheduled send).
        {
            "held_at": "NULL::timestamptz",
            "next_attempt_at": "greatest(now(), coalesce(j.send_at, now()))",
            "pushed_at": "NULL::timestamptz",
        },
    ),
    BulkAction.RETRY: (
        "j.state = 'deferred' AND j.held_at IS NULL AND j.next_attempt_at > now()",
        {"next_attempt_at": "now()", "pushed_at": "NULL::timestamptz"},
    ),
}
_IN_FLIGHT: dict[BulkAction, tuple[str, dict[str, str]]] = {
    BulkAction.CANCEL: (
        f"{_SENDING} AND j.cancel_requested_at IS NULL",
        {"cancel_requested_at": "now()"},
    ),
    BulkAction.HOLD: (f"{_SENDING} AND j.held_at IS NULL", {"held_at": "now()"}),
    BulkAction.RELEASE: (f"{_SENDING} AND j.held_at IS NOT NULL", {"held_at": "NULL::timestamptz"}),
}


def _update(action: BulkAction) -> tuple[str, str]:
    """The WHERE condition and SET list of ``action`` over waiting and in-flight jobs at once.

    One statement, so a job changing between waiting and in flight while it runs (a claim, an
    outcome) is still caught: PostgreSQL re-reads a row it had to wait for and evaluates the
    condition and every CASE on that newest version.
    """
    now_cond, now_set = _NOW[action]
    flight = _IN_FLIGHT.get(action)
    if flight is None:
        return now_cond, ", ".join(f"{col} = {expr}" for col, expr in now_set.items())
    flight_cond, flight_set = flight
    sets = [
        f"{col} = CASE WHEN j.state = 'sending' THEN {flight_set.get(col, f'j.{col}')}"
        f" ELSE {now_set.get(col, f'j.{col}')} END"
        for col in dict.fromkeys([*now_set, *flight_set])
    ]
    return f"(({now_cond}) OR ({flight_cond}))", ", ".join(sets)


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
    """Change the jobs ``sel`` names (one statement, with one event per waiting job changed);
    run it inside the caller's transaction so the audit row commits with it."""
    args: list[object] = []
    where = _where(sel, args)
    cond, assign = _update(action)
    args.append(_EVENT_KIND[action])
    kind = f"${len(args)}"
    args.append(_actor_data(actor))
    data = f"${len(args)}::text::jsonb"
    row = await conn.fetchrow(
        f"""
        WITH changed AS (
            UPDATE queue.jobs j SET {assign}, updated_at = now()
             WHERE {where} AND {cond}
            RETURNING j.id, j.tenant_id, j.recipient, j.message_id, j.state = 'sending' AS flying),
        written AS (
            INSERT INTO oltp.events (tenant_id, job_id, kind, recipient, message_id, reason, data)
            SELECT c.tenant_id, c.id, {kind}, c.recipient, c.message_id, 'operator', {data}
              FROM changed c WHERE NOT c.flying RETURNING 1)
        SELECT (SELECT count(*) FROM written) AS affected,
               (SELECT count(*) FROM changed WHERE flying) AS in_flight
        """,
        *args,
    )
    assert row is not None
    affected, in_flight = int(row["affected"]), int(row["in_flight"])
    if affected and action in (BulkAction.RELEASE, BulkAction.RETRY):
        # Wake every feeder: the jobs are due now.
        await conn.execute("SELECT pg_notify($1, '')", notify_channel)
    return BulkCount(affected, in_flight)


def _actor_data(actor: str) -> str:
    """The event's ``data``: who acted (JSON text for a jsonb parameter)."""
    return msgspec.json.encode({"by": actor}).decode()
