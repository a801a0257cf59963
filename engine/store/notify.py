"""The feeder's wake-up: ``NOTIFY engine_jobs`` at the commit of jobs that are due now."""

from __future__ import annotations

from engine.store.pool import Conn

#: The channel the feeder LISTENs on; every writer of due jobs notifies it.
NOTIFY_CHANNEL = "engine_jobs"


async def wake_feeder(conn: Conn) -> None:
    """Notify the feeder; delivered when the caller's transaction commits, never on rollback."""
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
