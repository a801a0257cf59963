"""A stable consumer identity per host and worker, and taking over a predecessor's work.

The Redis consumer name is also the PostgreSQL lease owner. It is ``<host>-w<worker>`` (or the
configured ``[queue] consumer_name``), the same after a restart, so a daemon restarted on the same
host finds its predecessor's claims and pending stream entries under its own name and releases
them at once, instead of waiting for a heartbeat to expire and a lease to run out.

The heartbeat key of a name holds ``<host>:<pid>:<process start time>`` of the process using it.
A starting daemon takes a name when the key is gone, or names a process on this host that no
longer exists; a live holder (a second daemon started on the same host with the same worker
index) makes it try ``<name>.1``, ``<name>.2``, ... so two live processes never share a name.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import asyncpg

from engine.errors import QueueError
from engine.queue.streams import Entry, Streams
from engine.store import jobs as job_store

log = logging.getLogger("engine.identity")

#: Names tried after the base name before giving up (live processes holding the others).
MAX_SLOTS = 64


def base_name(configured: str, worker: str | None) -> str:
    """``<host>-w<worker index>`` (worker 0 when not run by the supervisor); a configured name
    is used as it is, with ``-w<index>`` under the supervisor."""
    if configured:
        return f"{configured}-w{worker}" if worker else configured
    return f"{socket.gethostname()}-w{worker or 0}"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rpartition(")")[2].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):  # a zombie is gone, only not yet reaped
        return None
    return fields[19]


def holder_token(pid: int | None = None) -> str:
    """What this process writes to its heartbeat key."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def holder_gone(value: bytes | str) -> bool:
    """True when ``value`` names a process of this host that no longer runs.

    A holder on another host, or a value this code did not write, counts as alive: only its
    heartbeat expiring tells it is gone.
    """
    text = value.decode() if isinstance(value, bytes) else value
    host, _, rest = text.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or not ticks:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    return _start_ticks(pid) != ticks


async def claim_name(streams: Streams, base: str, ttl_s: float) -> str:
    """Hold the first free name of ``base``, ``base.1``, ...; sets ``streams.holder``."""
    token = holder_token()
    for slot in range(MAX_SLOTS):
        name = base if slot == 0 else f"{base}.{slot}"
        seen = await streams.holder_of(name)
        if seen is not None and not holder_gone(seen):
            continue
        if await streams.take_name(name, seen, token, ttl_s):
            streams.holder = token
            return name
    raise QueueError(
        f"every consumer name {base} .. {base}.{MAX_SLOTS - 1} is held by a live process",
        hint="stop the extra daemons on this host, or set [queue] consumer_name per instance",
    )


async def take_over(pool: asyncpg.Pool, streams: Streams, owner: str, me: str) -> dict[str, int]:
    """Release everything ``owner`` held (a dead consumer, or ``me``'s own predecessor).

    Its leased jobs go back to the queue; the entries it read are moved to ``me`` and
    acknowledged after the jobs they name that were never claimed are made pushable again (the
    feeder pushes them at its next round). Returns the counts of both.
    """
    released = await job_store.release_leases(pool, [owner])
    entries: list[Entry] = await streams.take_pending(owner, me)
    unpushed = await job_store.unpush(pool, [e.job_id for e in entries if e.job_id])
    await streams.ack(entries)
    if owner != me:
        await streams.forget_consumer(owner)
    if released or entries:
        log.info(
            "took over a consumer's work",
            extra={"owner": owner, "released": released, "entries": len(entries)},
        )
    return {"released": released, "unpushed": unpushed}


__all__ = ["base_name", "claim_name", "holder_gone", "holder_token", "take_over"]
