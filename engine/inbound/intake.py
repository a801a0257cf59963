"""The bounded queue between the SMTP listener and the parse workers.

Bounded in messages and in bytes, counted from the moment the listener reserves a place (at DATA,
before storing: when there is no room it answers 421 and the sender retries) until the message's
effects are applied or it is quarantined. Messages are known by their stored id, so the sweep
that re-reads stored rows (start-up recovery, requeued messages) never queues one twice.
"""

from __future__ import annotations

import asyncio
from collections import deque

import msgspec


class Queued(msgspec.Struct, frozen=True):
    """A stored message waiting for the parser, with what the listener knew when it took it."""

    inbound_id: int
    raw: bytes
    envelope_to: str | None
    verp_job_id: int | None
    fbl: bool
    peer: str = ""
    mail_from: str = ""


class Intake:
    """At most ``max_items`` messages and ``max_bytes`` raw bytes reserved, queued or in work."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max(1, max_items)
        self.max_bytes = max(1, max_bytes)
        self._queue: deque[Queued] = deque()
        self._sizes: dict[int, int] = {}  # queued or in work: id -> raw size
        self._used_bytes = 0
        self._reserved = 0
        self._reserved_bytes = 0
        self._ready = asyncio.Event()

    @property
    def depth(self) -> int:
        """Messages reserved, queued or in work."""
        return len(self._sizes) + self._reserved

    @property
    def queued(self) -> int:
        """Messages waiting for the parser."""
        return len(self._queue)

    def room(self) -> tuple[int, int]:
        """How many more messages, and bytes, fit now."""
        return (
            self.max_items - self.depth,
            self.max_bytes - self._used_bytes - self._reserved_bytes,
        )

    def known(self) -> list[int]:
        """Ids queued or in work (the sweep leaves them alone)."""
        return list(self._sizes)

    def reserve(self, size: int) -> bool:
        """Hold a place for a message of ``size`` bytes about to be stored; False when full.

        A message alone larger than ``max_bytes`` still fits an empty intake (the listener's
        size limit bounds it)."""
        items, room_bytes = self.room()
        if items <= 0 or (size > room_bytes and self.depth > 0):
            return False
        self._reserved += 1
        self._reserved_bytes += size
        return True

    def release(self, size: int) -> None:
        """Give back a place reserved by :meth:`reserve` (the message was not stored)."""
        self._reserved = max(0, self._reserved - 1)
        self._reserved_bytes = max(0, self._reserved_bytes - size)

    def put(self, item: Queued, *, reserved: bool) -> bool:
        """Queue a stored message (``reserved``: in the place :meth:`reserve` held for it).

        False, and nothing queued, when that id is already queued or in work."""
        if reserved:
            self.release(len(item.raw))
        if item.inbound_id in self._sizes:
            return False
        self._sizes[item.inbound_id] = len(item.raw)
        self._used_bytes += len(item.raw)
        self._queue.append(item)
        self._ready.set()
        return True

    def take(self, limit: int) -> list[Queued]:
        """Up to ``limit`` queued messages, oldest first (they stay counted until :meth:`done`)."""
        out: list[Queued] = []
        while self._queue and len(out) < limit:
            out.append(self._queue.popleft())
        if not self._queue:
            self._ready.clear()
        return out

    def done(self, inbound_id: int) -> None:
        """A taken message's effects are applied, or it is quarantined, or given up on."""
        size = self._sizes.pop(inbound_id, None)
        if size is not None:
            self._used_bytes -= size

    async def wait(self, timeout_s: float) -> bool:
        """Until a message is queued (True) or ``timeout_s`` passed (False)."""
        if self._queue:
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
