"""Which relay node a message goes to (sans-IO): weighted rendezvous hashing.

A sender keeps its IP (DESIGN §6): the affinity key (the sender domain) is hashed with each node's
name and the node with the highest weighted score wins. When that node is down the next one in
the same order takes over, and when it comes back the sender returns to it; adding or removing a
node moves only the senders that scored highest on it (unlike ``hash % n``). A node with weight 2
wins about twice as many keys as a node with weight 1 (Schindelhauer & Schomaker's logarithmic
method: score = weight / -ln(u), u uniform in (0, 1)).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["random_order", "rendezvous_order"]

_TWO_64 = float(2**64)


def _unit_hash(node: str, key: str) -> float:
    """A stable pseudo-random number in (0, 1) for (node, key); the same on every host."""
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


def _order(key: str, nodes: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    scored = [
        (weight / -math.log(_unit_hash(name, key)), name) for name, weight in nodes if weight > 0
    ]
    scored.sort(reverse=True)
    return tuple(name for _, name in scored)


_cached_order = lru_cache(maxsize=65536)(_order)


def rendezvous_order(key: str, nodes: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """Node names, best first, for ``key``; ``nodes`` are ``(name, weight)``, weight 0 = unused.

    Cached per key: the node list comes from the config and a busy sender asks thousands of times.
    """
    return _cached_order(key, tuple(nodes))


def random_order(nodes: Sequence[tuple[str, int]], rng: random.Random) -> tuple[str, ...]:
    """A weighted random order for messages without affinity (same weighting as above)."""
    scored = [
        (weight / -math.log(1.0 - rng.random()), name) for name, weight in nodes if weight > 0
    ]
    scored.sort(reverse=True)
    return tuple(name for _, name in scored)
