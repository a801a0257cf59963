"""The suppression check that also matches erased (hashed) addresses.

Same signature and result as :func:`engine.store.suppressions.check`; the lead replaces that
function's query with :data:`~engine.gdpr.pseudonym.SUPPRESSION_CHECK_SQL` (or calls this).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from engine.gdpr.pseudonym import SUPPRESSION_CHECK_SQL


async def check(pool: asyncpg.Pool, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (tenant, address) pairs are suppressed now, in clear or as an erased pseudonym."""
    if not pairs:
        return set()
    rows = await pool.fetch(SUPPRESSION_CHECK_SQL, [p[0] for p in pairs], [p[1] for p in pairs])
    return {(r["tenant_id"], r["address"]) for r in rows}
