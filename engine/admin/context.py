"""What the admin routes work with: the daemon's live objects, handed over once at start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import asyncpg

from engine import metrics
from engine.config import Config
from engine.events.ssrf import Resolve
from engine.queue.streams import Streams
from engine.relay.results import NodeStatus
from engine.senders.service import REFRESH_S, PauseCache
from engine.store.pool import Reads, Tiers


class RelayView(Protocol):
    """The part of :class:`~engine.relay.pool.RelayPool` the admin side-port uses."""

    def snapshot(self) -> list[NodeStatus]: ...

    async def check_health(self) -> list[NodeStatus]: ...


T = TypeVar("T")

# A readiness probe: a name and a coroutine that raises (any exception) when not ready.
Probe = tuple[str, Callable[[], Awaitable[object]]]


@dataclass(slots=True)
class AdminContext:
    """The daemon's collaborators, as the admin app and the gauge collector see them.

    ``drain`` is called (once) by ``POST /v1/drain``: the daemon stops taking work and exits
    after the mail in flight, exactly as on SIGTERM. ``ready`` holds extra readiness probes run
    by ``/readyz`` next to the built-in PostgreSQL, Redis and relay ones. ``shaper``, when given,
    is the Redis cache :mod:`engine.senders.service` keeps in step with ``oltp.senders``.
    ``paused_refresh_s`` is how stale the dispatcher's view of paused senders may be (its refresh
    interval); resumed senders' held jobs become due just after it.
    """

    cfg: Config
    pool: asyncpg.Pool
    streams: Streams
    relay: RelayView
    drain: Callable[[], None]
    ready: Sequence[Probe] = ()
    shaper: PauseCache | None = None
    paused_refresh_s: float = REFRESH_S
    # The DNS seam webhook creation vets host names with (engine/events/ssrf.py); None: only
    # the static checks at creation (delivery vets every connection anyway).
    resolve: Resolve | None = None
    draining: bool = field(default=False)
    # Read-only queries (status, backlog, searches) on the replica when configured.
    reads: Reads | None = None
    # The content and olap tiers' pools (the daemon's pool for a tier on [database]'s server).
    tiers: Tiers | None = None

    async def read(self, query: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """``query(pool)`` on the read replica while it answers, else on the primary."""
        return await (self.reads or Reads(self.pool)).run(query)

    async def read_olap(self, query: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """``query(pool)`` on the olap tier: its server's replica while it answers (with the
        tier apart and ``[database.olap] replica_dsn`` set), else its primary."""
        reads = self.tiers.olap_reads if self.tiers is not None else None
        return await (reads or Reads(self.olap)).run(query)

    @property
    def content_tiers(self) -> Tiers:
        """The tiers, for reads of the content tier that may lag (:meth:`Tiers.read_content`:
        its server's replica while it answers, with the tier apart and a replica set)."""
        return self.tiers or Tiers(self.pool)

    @property
    def content(self) -> asyncpg.Pool:
        """The content tier's pool."""
        return self.pool if self.tiers is None else self.tiers.content

    @property
    def olap(self) -> asyncpg.Pool:
        """The olap tier's pool."""
        return self.pool if self.tiers is None else self.tiers.olap

    def mark_draining(self) -> None:
        """Record that a drain began (``/readyz`` answers 503 from now on); idempotent.

        ``POST /v1/drain`` calls it before ``drain``; the daemon calls it on SIGTERM too.
        """
        self.draining = True
        metrics.DRAINING.set(1)
