"""Relay transactions in flight per receiving provider, in this daemon (``max_connections``).

``[[shaping.providers]] max_connections`` bounds how many messages for one provider (Gmail,
Outlook, …) this daemon has on the wire to the relay tier at once. The rate limits (GCRA, AIMD)
say how many per second; this says how many at the same time, so a provider whose relay
transactions slow down (a MailU node queueing, a node-side policy service stalling) cannot take
every slot of ``[queue] max_in_flight`` from the others.

The limit is per daemon instance, held in memory: taking a slot costs no round trip. A
cross-instance count in Redis would add two round trips per message and a lease for slots of
a crashed instance, and still would not bound what reaches the provider: the connections to
Gmail are the MailU node's Postfix's, paced by its per-transport concurrency and rate delay
(``engine mailu overrides``, docs/mailu.md). With N instances the relay tier sees at most
N × ``max_connections`` transactions for a provider at once.

A job that finds its provider full waits for a slot, up to ``wait_s`` (the dispatcher gives
:data:`CAMPAIGN_WAIT_S`, well within a claim's lease). At most ``max_waiting`` jobs wait per
provider (at least ``max_connections``; the dispatcher gives half of ``[queue] max_in_flight``,
so a slow provider cannot take every slot of the dispatcher from the others). Past that, or
past the wait, the job is held (re-queued, not an attempt) for :data:`HOLD_S`. While any job
waits at a gate (or was just held at one), the dispatcher keeps no more than half of
``max_in_flight`` claimed (:meth:`ProviderSlots.crowded`): a held job costs a claim, an outcome
write and a feed again, and each one held would free a slot for yet another claim, so a
campaign to one provider waits its turn in memory instead of circling through the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["CAMPAIGN_WAIT_S", "HOLD_S", "WAIT_S", "ProviderSlots"]

#: How long a job waits for a slot of its provider before it is held instead (default).
WAIT_S = 1.0
#: The dispatcher's wait: a job in the waiting room is claimed (leased for ``[queue] lease_s``,
#: 120 s by default), so it must be sent or held well before its lease runs out.
CAMPAIGN_WAIT_S = 10.0
#: How far out a job is re-queued when its provider's slots stay full.
HOLD_S = 0.5


class _Gate:
    __slots__ = ("busy", "limit", "sem", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sem = asyncio.Semaphore(limit)
        self.busy = 0
        self.waiting = 0


class Slot:
    """A taken slot; :meth:`release` gives it back (once)."""

    __slots__ = ("_gate", "_owner", "_provider")

    def __init__(self, owner: ProviderSlots, provider: str, gate: _Gate | None) -> None:
        self._owner = owner
        self._provider = provider
        self._gate = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            self._owner._release(self._provider, gate)


class ProviderSlots:
    """Per-provider in-flight limits; ``limit_of(provider)`` is read at every take, so a config
    reload that changes ``max_connections`` applies to the next messages (0 or less: no limit)."""

    def __init__(
        self, limit_of: Callable[[str], int], *, wait_s: float = WAIT_S, max_waiting: int = 0
    ) -> None:
        self._limit_of = limit_of
        self._wait_s = wait_s
        self._max_waiting = max_waiting  # 0: the provider's limit
        self._gates: dict[str, _Gate] = {}
        self._turned_away_at = -HOLD_S  # time.monotonic() of the last job held at a gate
        self.waiting = 0  # jobs waiting at every gate

    def crowded(self) -> bool:
        """True while jobs wait at a full gate, or one was held at a gate within
        :data:`HOLD_S`: claiming more now would mostly add jobs to hold."""
        return self.waiting > 0 or time.monotonic() - self._turned_away_at < HOLD_S

    def in_flight(self, provider: str) -> int:
        """Transactions for ``provider`` on the wire now."""
        gate = self._gates.get(provider)
        return 0 if gate is None else gate.busy

    async def take(self, provider: str) -> Slot | None:
        """A slot for one transaction to ``provider``, or None: hold the job instead."""
        limit = self._limit_of(provider) if provider else 0
        if limit <= 0:
            return Slot(self, provider, None)
        gate = self._gates.get(provider)
        if gate is None or gate.limit != limit:
            # A new limit (reload) gets a new gate; slots taken under the old one go back to it.
            gate = self._gates[provider] = _Gate(limit)
        if not gate.sem.locked():
            await gate.sem.acquire()  # does not wait: a permit is free
        else:
            if gate.waiting >= max(gate.limit, self._max_waiting):
                self._turned_away_at = time.monotonic()
                return None
            gate.waiting += 1
            self.waiting += 1
            try:
                async with asyncio.timeout(self._wait_s):
                    await gate.sem.acquire()
            except TimeoutError:
                self._turned_away_at = time.monotonic()
                return None
            finally:
                gate.waiting -= 1
                self.waiting -= 1
                self._forget_if_idle(provider, gate)
        gate.busy += 1
        return Slot(self, provider, gate)

    def _release(self, provider: str, gate: _Gate) -> None:
        gate.busy -= 1
        gate.sem.release()
        self._forget_if_idle(provider, gate)

    def _forget_if_idle(self, provider: str, gate: _Gate) -> None:
        # Unknown MX groups come and go by the thousand: keep gates only while in use.
        if not gate.busy and not gate.waiting and self._gates.get(provider) is gate:
            del self._gates[provider]
