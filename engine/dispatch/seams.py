"""What the dispatcher needs from relay, DKIM and shaping, as protocols.

The daemon wires the real implementations; tests may wire simpler ones. Keeping the pipeline
behind these seams means it never imports a concrete relay/DKIM/shaping class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.compose.mime import ComposedBody
from engine.model import OutcomeKind
from engine.relay.dsn import DsnRequest
from engine.shaping.model import DeliverySignal, Provider, ShapeDecision, ShapeRequest


class SendResult(Protocol):
    @property
    def kind(self) -> OutcomeKind: ...
    @property
    def reply_code(self) -> int | None: ...
    @property
    def enhanced_status(self) -> str | None: ...
    @property
    def reply(self) -> str: ...
    @property
    def node(self) -> str | None: ...
    @property
    def throttled(self) -> bool: ...


class Relay(Protocol):
    async def send(
        self,
        envelope_from: str,
        recipients: list[str] | str,
        message: bytes,
        *,
        affinity: str | None = None,
        tenant: str | None = None,
        dsn: DsnRequest | None = None,
    ) -> SendResult: ...


class Signer(Protocol):
    async def sign(
        self, tenant_id: str, domain: str, message: bytes, body: ComposedBody | None
    ) -> bytes:
        """Return the message with DKIM-Signature header(s) prepended.

        Raises :class:`engine.errors.DkimKeyMissingError` when the domain has no key and
        signing is required; returns the message unchanged when not required.
        """
        ...


class Shaper(Protocol):
    """What the dispatcher needs of :class:`engine.shaping.shaper.Shaper`."""

    async def acquire(self, requests: Sequence[ShapeRequest]) -> list[ShapeDecision]: ...

    def record(self, signal: DeliverySignal | None) -> None: ...

    def provider_limits(self, name: str) -> Provider:
        """The provider's ceilings; ``max_connections`` bounds its relay transactions in flight
        (:mod:`engine.dispatch.inflight`)."""
        ...
