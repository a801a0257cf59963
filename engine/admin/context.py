"""What the admin routes work with: the daemon's live objects, handed over once at start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from engine import metrics
from engine.config import Config
from engine.queue.streams import Streams
from engine.relay.results import NodeStatus


class RelayView(Protocol):
    """The part of :class:`~engine.relay.pool.RelayPool` the admin side-port uses."""

    def snapshot(self) -> list[NodeStatus]: ...

    async def check_health(self) -> list[NodeStatus]: ...


class SenderPauser(Protocol):
    """Shaping's own pause state (Redis), kept in step with ``oltp.senders`` when present."""

    async def pause(self, tenant_id: str, sender: str, message: str = ...) -> bool: ...

    async def resume(self, tenant_id: str, sender: str) -> bool: ...


# A readiness probe: a name and a coroutine that raises (any exception) when not ready.
Probe = tuple[str, Callable[[], Awaitable[object]]]


@dataclass(slots=True)
class AdminContext:
    """The daemon's collaborators, as the admin app and the gauge collector see them.

    ``drain`` is called (once) by ``POST /v1/drain``: the daemon stops taking work and exits
    after the mail in flight, exactly as on SIGTERM. ``ready`` holds extra readiness probes run
    by ``/readyz`` next to the built-in PostgreSQL, Redis and relay ones. ``shaper``, when given,
    is paused/resumed together with ``oltp.senders`` so an automatic shaping pause is lifted by
    the same ``resume`` call. ``paused_refresh_s`` is how stale the dispatcher's view of paused
    senders may be (its refresh interval); resumed senders' held jobs become due just after it.
    """

    cfg: Config
    pool: asyncpg.Pool
    streams: Streams
    relay: RelayView
    drain: Callable[[], None]
    ready: Sequence[Probe] = ()
    shaper: SenderPauser | None = None
    paused_refresh_s: float = 5.0  # engine.dispatch.worker.PausedSenders' default ttl_s
    draining: bool = field(default=False)

    def mark_draining(self) -> None:
        """Record that a drain began (``/readyz`` answers 503 from now on); idempotent.

        ``POST /v1/drain`` calls it before ``drain``; the daemon calls it on SIGTERM too.
        """
        self.draining = True
        metrics.DRAINING.set(1)
