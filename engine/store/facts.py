"""OLAP tier for analysts: outcome facts and latency histograms (migration 131).

Written in the outcome transactions of the send path (:mod:`engine.dispatch.outcomes`) and the
inbound path (:mod:`engine.inbound.effects`, :mod:`engine.inbound.unsubscribe`): one batched
upsert per batch (aggregated in Python first), never one per message. docs/analytics.md has the
queries dashboards run on these tables.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping

import asyncpg
import msgspec

from engine.store.pool import Conn

#: Upper bounds (ms) of the latency buckets; the last one catches everything slower.
LATENCY_BUCKETS_MS = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
    14_400_000,
    86_400_000,
    2**31 - 1,
)
OUTCOMES = (
    "relayed",
    "deferred",
    "failed",
    "delivered",
    "bounced",
    "soft_bounced",
    "complained",
    "unsubscribed",
)


class Fact(msgspec.Struct, frozen=True):
    """One outcome of one message (``day``: the send day; '' where a dimension is unknown)."""

    tenant_id: str
    day: dt.date
    campaign_id: str
    sender: str
    provider: str
    outcome: str
    reason: str = ""


class Latency(msgspec.Struct, frozen=True):
    """One measured duration (``kind``: relay | delivery) to add to its day's histogram."""

    tenant_id: str
    day: dt.date
    campaign_id: str
    kind: str
    ms: float


def bucket(ms: float) -> int:
    """The upper bound of the bucket ``ms`` falls in."""
    i = bisect.bisect_left(LATENCY_BUCKETS_MS, max(0.0, ms))
    return LATENCY_BUCKETS_MS[min(i, len(LATENCY_BUCKETS_MS) - 1)]


def day_of(when: dt.datetime | float | None) -> dt.date:
    """The UTC day of a timestamp (datetime or Unix seconds); today when unknown."""
    if when is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(when, dt.datetime):
        return when.astimezone(dt.UTC).date()
    return dt.datetime.fromtimestamp(when, dt.UTC).date()


#: A latency histogram cell: (tenant, day, campaign, kind, bucket upper bound in ms).
Cell = tuple[str, dt.date, str, str, int]


async def add(conn: Conn, facts: Iterable[Fact], latencies: Iterable[Latency] = ()) -> None:
    """Count ``facts`` and ``latencies``: at most one statement per table for the batch."""
    await add_counted(conn, Counter(facts), histogram(latencies))


def histogram(latencies: Iterable[Latency]) -> Counter[Cell]:
    """``latencies`` counted per histogram cell."""
    return Counter((x.tenant_id, x.day, x.campaign_id, x.kind, bucket(x.ms)) for x in latencies)


async def add_counted(conn: Conn, counts: Mapping[Fact, int], hist: Mapping[Cell, int]) -> None:
    """Add ``counts`` (fact -> n) and ``hist`` (cell -> n): at most one statement per table."""
    if counts:
        if any(f.outcome not in OUTCOMES for f in counts):
            raise ValueError(f"unknown outcome in {sorted({f.outcome for f in counts})}")
        keys = sorted(counts, key=lambda f: msgspec.structs.astuple(f))
        await conn.execute(
            "INSERT INTO olap.outcome_facts AS f"
            " (tenant_id, day, campaign_id, sender, provider, outcome, reason, n)"
            " SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::text[], $8::bigint[])"
            " ON CONFLICT (tenant_id, day, campaign_id, sender, provider, outcome, reason)"
            " DO UPDATE SET n = f.n + EXCLUDED.n",
            [f.tenant_id for f in keys],
            [f.day for f in keys],
            [f.campaign_id for f in keys],
            [f.sender for f in keys],
            [f.provider for f in keys],
            [f.outcome for f in keys],
            [f.reason for f in keys],
            [counts[f] for f in keys],
        )
    if hist:
        rows = sorted(hist)
        await conn.execute(
            "INSERT INTO olap.latency_histogram AS h (tenant_id, day, campaign_id, kind, le_ms, n)"
            " SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::int[],"
            " $6::bigint[])"
            " ON CONFLICT (tenant_id, day, campaign_id, kind, le_ms)"
            " DO UPDATE SET n = h.n + EXCLUDED.n",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [hist[r] for r in rows],
        )


#: How the outcomes map onto a campaign's public counters (bounced: hard and soft).
_COUNTER = {o: o for o in OUTCOMES} | {"soft_bounced": "bounced"}


async def campaign_days(
    conn: Conn | asyncpg.Pool, tenant_id: str, campaign_id: str
) -> dict[dt.date, dict[str, int]]:
    """A campaign's counters per send day (only days with mail)."""
    rows = await conn.fetch(
        "SELECT day, outcome, sum(n)::bigint AS n FROM olap.outcome_facts"
        " WHERE tenant_id = $1 AND campaign_id = $2 GROUP BY day, outcome",
        tenant_id,
        campaign_id,
    )
    out: dict[dt.date, dict[str, int]] = {}
    for r in rows:
        day = out.setdefault(r["day"], {})
        name = _COUNTER[r["outcome"]]
        day[name] = day.get(name, 0) + int(r["n"])
    return out
