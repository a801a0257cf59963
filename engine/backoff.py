"""Retry backoff (sans-IO), the one policy of the engine: exponential, capped, with optional
jitter. Deferred jobs, webhook deliveries, failing background tasks and bounce batches use it."""

from __future__ import annotations

import random


def backoff_s(
    attempts: int,
    *,
    base_s: float,
    max_s: float,
    jitter: float,
    rand: random.Random | None = None,
) -> float:
    """Delay before attempt ``attempts + 1``: base·2^(attempts-1), capped, ±jitter spread.

    Jitter spreads the retries of a campaign that was deferred all at once (a provider's 421
    storm), so they do not come back as one burst.
    """
    r = rand or random
    n = max(1, attempts)
    delay = min(max_s, base_s * (2.0 ** min(n - 1, 30)))
    if not jitter:
        return delay
    spread = delay * jitter
    return max(0.0, delay + r.uniform(-spread, spread))
