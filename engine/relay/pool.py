"""The relay pool: every configured MailU node behind one ``send()``.

``RelayPool.send()`` picks a node by weighted rendezvous hashing on the affinity key (the sender
domain, so a sender keeps its IP), skipping nodes whose breaker is open, and runs the transaction
there. With tenant pools (``[[relay.nodes]] tenants``, engine/relay/tenant_pools.py) only the
tenant's nodes are candidates, and a node warming up (``warmup = true``) is skipped once it has
relayed its daily cap (engine/relay/ip_warmup.py). If the node cannot take the message
(refused, TLS/AUTH failure, timeout or drop before the payload was handed over) the same message
goes to the next node in the sender's order — it is
not counted twice: nothing was delivered and ``send()`` returns one result. With no node left the
result is DEFERRED, "no relay node available"; ``send()`` does not raise for relay trouble.

Typical use (the daemon)::

    pool = RelayPool(cfg.relay, observer=metrics_observer)
    await pool.start()
    result = await pool.send(env_from, [rcpt], message_bytes, affinity=sender_domain)
    ...
    await pool.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Sequence
from types import TracebackType

import msgspec

from engine.config import RelayConfig, read_secret
from engine.errors import ConfigError, RelayError
from engine.model import OutcomeKind
from engine.periodic import Periodic, run_until
from engine.relay.breaker import Clock
from engine.relay.dsn import DsnRequest
from engine.relay.ip_warmup import NodeWarmup, WarmupLedger
from engine.relay.node import NodePool, NodeUnavailable, prepare_payload
from engine.relay.observer import RelayObserver
from engine.relay.results import NodeStatus, SendResult
from engine.relay.select import random_order, rendezvous_order
from engine.relay.tenant_pools import TenantPools, Weighted

__all__ = ["NO_RELAY_AVAILABLE", "RelayPool"]


NO_RELAY_AVAILABLE = "no relay node available"


class RelayPool:
    """Persistent SMTP sessions to every relay node, with failover, breakers and health checks."""

    def __init__(
        self,
        cfg: RelayConfig,
        *,
        observer: RelayObserver | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        warmup_ledger: WarmupLedger | None = None,
    ) -> None:
        if not cfg.nodes:
            raise ConfigError(
                "no relay node configured", hint="add a [[relay.nodes]] table to the config"
            )
        self._cfg = cfg
        self._observer = observer or RelayObserver()
        self._clock = clock
        self._rng = rng or random.Random()
        # Secrets are read now so a missing or world-readable password file fails at start.
        self._passwords = {
            n.name: read_secret(n.password, n.password_file, f"relay node {n.name} password")
            for n in cfg.nodes
        }
        self._weights: tuple[tuple[str, int], ...] = tuple((n.name, n.weight) for n in cfg.nodes)
        self._pools = TenantPools(cfg.nodes)
        # Warm-up counts shared by every instance when the daemon passes its ledger.
        self.warmup = NodeWarmup(cfg.nodes, ledger=warmup_ledger)
        self._nodes: dict[str, NodePool] = {}
        self._health_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, health_checks: bool = True) -> None:
        """Prepare the node pools (sessions open lazily) and start the periodic health check."""
        if self._started:
            return
        # Resolved once: aiosmtplib would call getfqdn() (a DNS lookup) for every new session.
        helo = self._cfg.helo_name
        if helo is None:
            helo = await asyncio.to_thread(socket.getfqdn)
        for node in self._cfg.nodes:
            self._nodes[node.name] = NodePool(
                node,
                self._cfg,
                helo_name=helo,
                password=self._passwords[node.name],
                observer=self._observer,
                clock=self._clock,
            )
        self._started = True
        if health_checks and self._cfg.health_interval_s > 0:
            self._health_task = asyncio.create_task(
                run_until(self.health_task(), asyncio.Event()), name="relay-health"
            )

    async def close(self) -> None:
        """Stop health checks and close every session politely (QUIT). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await asyncio.gather(*(n.close() for n in self._nodes.values()))

    async def __aenter__(self) -> RelayPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sending --------------------------------------------------------------------------------

    def _order(self, affinity: str | None, tenant: str | None = None) -> Sequence[str]:
        if not self._pools.partitioned:
            return self._ranked(self._weights, affinity)
        primary, fallback = self._pools.choices(tenant)
        return (*self._ranked(primary, affinity), *self._ranked(fallback, affinity))

    def _ranked(self, weights: Weighted, affinity: str | None) -> Sequence[str]:
        if len(weights) <= 1:
            return tuple(name for name, _ in weights)
        if affinity is None:
            return random_order(weights, self._rng)
        return rendezvous_order(affinity.lower(), weights)

    async def send(
        self,
        envelope_from: str,
        recipients: list[str] | str,
        message: bytes,
        *,
        affinity: str | None = None,
        tenant: str | None = None,
        dsn: DsnRequest | None = None,
    ) -> SendResult:
        """Relay one message; never raises for relay trouble, the result says what happened.

        ``affinity`` (the sender domain) keeps a sender on the same node while it is up;
        ``tenant`` restricts the choice to the tenant's relay pool (shared nodes when None);
        ``dsn`` asks the node for delivery notices (RFC 3461, :mod:`engine.relay.dsn`).
        """
        if not self._started or self._closed:
            raise RelayError("RelayPool.send() called before start() or after close()")
        rcpts = [recipients] if isinstance(recipients, str) else recipients
        if not rcpts:
            raise ValueError("send() needs at least one recipient")
        began = time.perf_counter()
        payload = prepare_payload(message)
        tried = 0
        last_error: str | None = None
        for name in self._order(affinity, tenant):
            node = self._nodes[name]
            if not node.breaker.available():
                continue
            # A warming node's cap unit is taken before sending (instances share the count)
            # and given back unless the message was relayed.
            warming = self.warmup.warming(name)
            if warming and not await self.warmup.reserve(name):
                continue
            tried += 1
            relayed = False
            try:
                result = await node.send(envelope_from, rcpts, payload, dsn)
                relayed = result.kind is OutcomeKind.RELAYED
            except NodeUnavailable as exc:
                last_error = str(exc)
                self._observer.failover(name, exc.reason)
                continue
            finally:
                if warming and not relayed:
                    await self.warmup.release(name)
            if tried > 1:
                result = msgspec.structs.replace(result, nodes_tried=tried)
            self._observer.message_sent(result, time.perf_counter() - began)
            return result
        reply = NO_RELAY_AVAILABLE if last_error is None else f"{NO_RELAY_AVAILABLE} ({last_error})"
        result = SendResult(
            kind=OutcomeKind.DEFERRED,
            reply_code=None,
            enhanced_status=None,
            reply=reply,
            node=None,
            nodes_tried=tried,
        )
        self._observer.message_sent(result, time.perf_counter() - began)
        return result

    # -- health -----------------------------------------------------------------------------------

    async def check_health(self) -> list[NodeStatus]:
        """Probe every node now (connect, TLS, AUTH, NOOP); for /readyz and the health loop."""
        await asyncio.gather(*(n.check() for n in self._nodes.values()))
        return self.snapshot()

    def snapshot(self) -> list[NodeStatus]:
        """The state of every node, without touching the network."""
        return [n.status() for n in self._nodes.values()]

    def available(self) -> bool:
        """Is at least one node's breaker letting traffic through?"""
        return any(n.breaker.available() for n in self._nodes.values())

    def health_task(self) -> Periodic:
        """Probe every node every ``health_interval_s``; a failed round is logged and retried,
        so a bug in a probe does not end health checking for the life of the daemon."""

        async def probe() -> None:
            await self.check_health()

        return Periodic("relay-health", probe, self._cfg.health_interval_s, at_start=False)
