"""Deficit round robin (Shreedhar & Varghese, 1995) between tenants and priorities, sans-IO.

Each *flow* (a tenant, or a priority within a tenant) has a queue and a deficit counter. A round
visits the active flows in turn; a visit adds ``quantum · weight`` to the flow's deficit and
emits items while the deficit covers their cost. A flow with a huge backlog therefore gets the
same share per round as a flow with three items: tenant A's 50k-recipient campaign and tenant
B's 100 password resets interleave, so B's mail is out within the first ~200 picks instead of
after A's 50k.

The feeder's turns between tenants are taken in PostgreSQL (:func:`engine.store.jobs.take_due`,
weighted by ``oltp.shaping_tenant_quotas.weight``); this module is a sans-IO model of them and
is not called on the send path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from engine.model import Priority

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Share of high, normal and low within one tenant (QueueConfig.weights has the same default).
DEFAULT_PRIORITY_WEIGHTS: tuple[int, int, int] = (8, 4, 1)


class DrrScheduler(Generic[K, T]):
    """A pure DRR scheduler: ``push`` items per flow, ``pop`` them in fair order.

    ``cost`` gives an item's cost (default 1 per item: fairness in messages; pass message size
    for fairness in bytes). ``weights`` scales a flow's quantum (default 1).
    """

    def __init__(
        self,
        quantum: float = 1.0,
        weights: Mapping[K, float] | Callable[[K], float] | None = None,
        cost: Callable[[T], float] | None = None,
    ) -> None:
        if quantum <= 0:
            raise ValueError("DRR quantum must be > 0")
        self._quantum = quantum
        self._weights = weights
        self._cost = cost
        self._queues: dict[K, deque[T]] = {}
        self._deficit: dict[K, float] = {}
        self._active: deque[K] = deque()  # flows with items, in round order
        self._visiting = False  # the head of _active already got this round's quantum
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _weight(self, key: K) -> float:
        w = self._weights
        if w is None:
            return 1.0
        if callable(w):
            return w(key)
        return w.get(key, 1.0)

    def _item_cost(self, item: T) -> float:
        return 1.0 if self._cost is None else self._cost(item)

    def push(self, key: K, item: T) -> None:
        """Append one item to ``key``'s queue (a new flow joins at the end of the round)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        if not queue:
            self._active.append(key)
            self._deficit[key] = 0.0
        queue.append(item)
        self._size += 1

    def extend(self, key: K, items: Iterable[T]) -> None:
        for item in items:
            self.push(key, item)

    def backlog(self, key: K) -> int:
        """Items waiting in one flow."""
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    def pop(self) -> tuple[K, T]:
        """The next item in fair order and its flow; ``IndexError`` when empty."""
        if not self._size:
            raise IndexError("pop from an empty DrrScheduler")
        while True:
            key = self._active[0]
            queue = self._queues[key]
            if not self._visiting:
                weight = self._weight(key)
                if weight <= 0:
                    raise ValueError(f"DRR weight of flow {key!r} must be > 0, got {weight}")
                self._deficit[key] += self._quantum * weight
                self._visiting = True
            cost = self._item_cost(queue[0])
            if self._deficit[key] >= cost:
                self._deficit[key] -= cost
                item = queue.popleft()
                self._size -= 1
                if not queue:
                    # An emptied flow leaves the round and forfeits its deficit (classic DRR:
                    # idle flows do not bank credit).
                    self._active.popleft()
                    del self._queues[key]
                    self._deficit.pop(key, None)
                    self._visiting = False
                return key, item
            self._active.rotate(-1)
            self._visiting = False

    def drain(self, limit: int | None = None) -> Iterator[tuple[K, T]]:
        """Pop up to ``limit`` items (all by default), lazily."""
        n = 0
        while self._size and (limit is None or n < limit):
            yield self.pop()
            n += 1


def fair_order(
    items: Iterable[T],
    tenant_of: Callable[[T], str],
    priority_of: Callable[[T], Priority] | None = None,
    *,
    tenant_weights: Mapping[str, float] | None = None,
    priority_weights: tuple[int, int, int] = DEFAULT_PRIORITY_WEIGHTS,
) -> list[T]:
    """Reorder a batch fairly: DRR between tenants, weighted DRR between priorities within each.

    Within one tenant and priority the original order is kept (FIFO).
    """
    per_tenant: dict[str, DrrScheduler[Priority, T]] = {}
    outer: DrrScheduler[str, DrrScheduler[Priority, T]] = DrrScheduler(weights=tenant_weights)
    pweights = {p: float(priority_weights[p.value]) for p in Priority}
    default = Priority.NORMAL
    keyed = [
        (tenant_of(item), default if priority_of is None else priority_of(item), item)
        for item in items
    ]
    for tenant, _, _ in keyed:  # tenants take turns in order of first appearance
        if tenant not in per_tenant:
            per_tenant[tenant] = DrrScheduler(weights=pweights)
    # Stable sort by priority: each tenant's round starts with its high-priority flow.
    for tenant, priority, item in sorted(keyed, key=lambda k: k[1]):
        per_tenant[tenant].push(priority, item)
    # The outer scheduler hands out turns: one turn = one item from that tenant's inner DRR.
    for tenant, inner in per_tenant.items():
        for _ in range(len(inner)):
            outer.push(tenant, inner)
    return [inner.pop()[1] for _, inner in outer.drain()]
