"""Relay pools per tenant, sans-IO: which nodes a tenant's mail may leave from.

``[[relay.nodes]] tenants = ["acme"]`` dedicates a node (its IP, its reputation) to those
tenants. Other tenants never use it; a tenant with dedicated nodes uses only those, unless one
of them sets ``fallback_shared = true``, in which case the shared nodes (those naming no tenant)
follow the dedicated ones in its failover order. A tenant without dedicated nodes, and mail sent
without a tenant, use the shared nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.config import RelayNode

Weighted = tuple[tuple[str, int], ...]


class TenantPools:
    """The (name, weight) lists each tenant chooses from, computed once from the config."""

    def __init__(self, nodes: Sequence[RelayNode]) -> None:
        self.shared: Weighted = tuple((n.name, n.weight) for n in nodes if not n.tenants)
        dedicated: dict[str, list[tuple[str, int]]] = {}
        self.fallback: frozenset[str] = frozenset(
            t for n in nodes if n.tenants and n.fallback_shared for t in n.tenants
        )
        for n in nodes:
            for tenant in n.tenants:
                dedicated.setdefault(tenant, []).append((n.name, n.weight))
        self.dedicated: dict[str, Weighted] = {t: tuple(v) for t, v in dedicated.items()}

    @property
    def partitioned(self) -> bool:
        """True when at least one node is dedicated (else every message uses every node)."""
        return bool(self.dedicated)

    def choices(self, tenant: str | None) -> tuple[Weighted, Weighted]:
        """(primary nodes, fallback nodes) for a tenant's message; either may be empty."""
        own = self.dedicated.get(tenant) if tenant is not None else None
        if own is None:
            return self.shared, ()
        return own, self.shared if tenant in self.fallback else ()
