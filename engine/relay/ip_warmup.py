"""IP-level warm-up of new relay nodes, sans-IO: a daily cap that grows over 30 days.

A fresh IP that suddenly sends 500k messages a day looks like a spammer's new box; receivers
build trust in an IP over weeks. A node with ``warmup = true`` in ``[[relay.nodes]]`` may relay
at most ``NODE_PLAN[day]`` messages per UTC day, day 0 being ``warmup_started``; from day 30 on
it has no cap (set ``warmup = false`` then, or leave it: the cap is gone either way). The sender
warm-up (engine/shaping/warmup.py) is a separate, per sender x provider plan.

:class:`NodeWarmup` is what the relay pool consults. The daemon gives it a shared
:class:`WarmupLedger` (engine/relay/node_budget.py: one Redis counter per node and UTC day),
so N instances together relay at most the cap and a restart does not reset the count; without a
ledger (tests, tools) it counts in memory, per process. A message takes one unit of the cap
before it is sent and gives it back when it was not relayed, so concurrent senders never
overshoot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Protocol

from engine.config import RelayNode
from engine.errors import ConfigError

#: Messages per UTC day on warm-up day 0, 1, ... 29 (about x1.3 a day; no cap from day 30).
NODE_PLAN: tuple[int, ...] = (
    500, 1000, 1500, 2000, 3000, 4000, 5000, 6500, 8000, 10000,
    12500, 15000, 20000, 25000, 30000, 40000, 50000, 60000, 75000, 90000,
    110000, 130000, 160000, 200000, 250000, 300000, 375000, 450000, 550000, 700000,
)  # fmt: skip


def started_day(node: RelayNode) -> dt.date | None:
    """The node's warm-up day 0, or None when it is not warming up (ConfigError if invalid)."""
    if not node.warmup:
        return None
    if node.warmup_started is None:
        raise ConfigError(
            f"relay node {node.name!r} has warmup = true but no warmup_started",
            hint='set warmup_started = "YYYY-MM-DD" (the day the IP started sending)',
        )
    try:
        return dt.date.fromisoformat(node.warmup_started)
    except ValueError:
        raise ConfigError(
            f"relay node {node.name!r} warmup_started {node.warmup_started!r} is not YYYY-MM-DD"
        ) from None


def daily_cap(
    started: dt.date | None, today: dt.date, plan: Sequence[int] = NODE_PLAN, scale: float = 1.0
) -> int | None:
    """Today's cap of a node that started warming up on ``started``; None = no cap."""
    if started is None:
        return None
    day = (today - started).days
    if day >= len(plan):
        return None
    return max(1, int(plan[max(day, 0)] * scale))


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class WarmupLedger(Protocol):
    """Relayed-today counts shared by every instance (the I/O side of :class:`NodeWarmup`)."""

    async def take(self, node: str, day: dt.date, cap: int) -> bool:
        """Count one message for ``node`` on ``day`` if it stays within ``cap``."""
        ...

    async def give_back(self, node: str, day: dt.date) -> None:
        """Undo one :meth:`take` (the message was not relayed)."""
        ...


class NodeWarmup:
    """Per-node relayed-today counters checked against each warming node's cap."""

    def __init__(
        self,
        nodes: Sequence[RelayNode],
        *,
        today: Callable[[], dt.date] = _utc_today,
        ledger: WarmupLedger | None = None,
    ) -> None:
        self._started = {n.name: d for n in nodes if (d := started_day(n)) is not None}
        self._today = today
        self._day: dt.date | None = None
        self._counts: dict[str, int] = {}
        self._ledger = ledger

    def warming(self, name: str) -> bool:
        """Is this node on a warm-up plan (graduated or not)? Others need no reservation."""
        return name in self._started

    async def reserve(self, name: str) -> bool:
        """Take one unit of today's cap before sending through ``name`` (False: cap reached,
        or the shared count cannot be reached: a warming node is skipped rather than risked)."""
        cap = self.cap(name)
        if cap is None:
            return True
        if self._ledger is None:
            if self._counts.get(name, 0) >= cap:
                return False
            self.count(name)
            return True
        try:
            taken = await self._ledger.take(name, self._roll(), cap)
        except Exception:  # the ledger's store is down: do not risk the IP's reputation
            return False
        if taken:
            self.count(name)
        return taken

    async def release(self, name: str) -> None:
        """Give back a :meth:`reserve` whose message was not relayed."""
        if self.cap(name) is None:
            return
        if self._counts.get(name, 0) > 0:
            self._counts[name] -= 1
        if self._ledger is not None:
            # Unreachable store: the unit stays counted (the cap errs on the safe side).
            with contextlib.suppress(Exception):
                await self._ledger.give_back(name, self._roll())

    def _roll(self) -> dt.date:
        today = self._today()
        if today != self._day:
            self._day, self._counts = today, {}
        return today

    def cap(self, name: str) -> int | None:
        """Today's cap of a node (None: not warming up, or graduated)."""
        return daily_cap(self._started.get(name), self._roll())

    def allows(self, name: str) -> bool:
        """May this node take one more message today?"""
        if name not in self._started:
            return True
        cap = self.cap(name)
        return cap is None or self._counts.get(name, 0) < cap

    def count(self, name: str) -> None:
        """One message relayed by ``name`` (counted only for warming nodes)."""
        if name in self._started:
            self._roll()
            self._counts[name] = self._counts.get(name, 0) + 1

    def sent_today(self, name: str) -> int:
        """Messages this process counted for ``name`` today (the shared count is the ledger's)."""
        self._roll()
        return self._counts.get(name, 0)
