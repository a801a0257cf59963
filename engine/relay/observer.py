"""Hooks the relay pool calls so metrics can be wired in without the pool knowing Prometheus.

Subclass :class:`RelayObserver` and override what you need; every hook is called on the event
loop, synchronously, and must not block or raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.relay.breaker import BreakerState
    from engine.relay.results import SendResult

__all__ = ["RelayObserver"]


class RelayObserver:
    """No-op base: one instance per :class:`~engine.relay.pool.RelayPool`."""

    def message_sent(self, result: SendResult, seconds: float) -> None:
        """A ``send()`` finished (any outcome); ``seconds`` includes failover and queueing."""

    def connection_opened(self, node: str) -> None:
        """A new SMTP session to ``node`` is ready (connected, TLS, AUTH done)."""

    def connection_closed(self, node: str, reason: str) -> None:
        """A session ended; ``reason``: recycled, lost, idle, shutdown or reply (a 421)."""

    def connection_failed(self, node: str, error: str) -> None:
        """Connecting to ``node``, or talking to it, failed at the connection level."""

    def failover(self, node: str, error: str) -> None:
        """A message left ``node`` for the next one (nothing was handed over)."""

    def breaker_changed(self, node: str, old: BreakerState, new: BreakerState) -> None:
        """The circuit breaker of ``node`` changed state."""
