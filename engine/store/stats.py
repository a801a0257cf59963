"""OLAP tier: daily counters, one batched upsert per outcome batch, never per message."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable

from engine.store.pool import Conn

COLUMNS = (
    "sent",
    "relayed",
    "deferred",
    "failed",
    "bounced_hard",
    "bounced_soft",
    "complained",
    "unsubscribed",
)


async def add(
    conn: Conn, counts: Iterable[tuple[tuple[str, str, str], str, int]], day: dt.date | None = None
) -> None:
    """Add ``n`` to ``column`` of (tenant, sender, provider) for ``day`` (default: today, UTC)."""
    agg: Counter[tuple[str, str, str, str]] = Counter()
    for (tenant, sender, provider), column, n in counts:
        if column not in COLUMNS:
            raise ValueError(f"unknown daily_stats column {column!r}")
        agg[(tenant, sender, provider, column)] += n
    if not agg:
        return
    keys = sorted({k[:3] for k in agg})
    day = day or dt.datetime.now(dt.UTC).date()
    arrays = [[agg.get((*k, c), 0) for k in keys] for c in COLUMNS]
    sets = ", ".join(f"{c} = daily_stats.{c} + EXCLUDED.{c}" for c in COLUMNS)
    cols = ", ".join(COLUMNS)
    params = ", ".join(f"${i}::bigint[]" for i in range(5, 5 + len(COLUMNS)))
    await conn.execute(
        f"INSERT INTO olap.daily_stats (tenant_id, day, sender, provider, {cols})"
        f" SELECT t, $1, s, p, {cols} FROM unnest($2::text[], $3::text[], $4::text[], {params})"
        f" AS u(t, s, p, {cols})"
        f" ON CONFLICT (tenant_id, day, sender, provider) DO UPDATE SET {sets}",
        day,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        *arrays,
    )
