"""The OLAP tier for analysts (docs/analytics.md).

Every SQL block of docs/analytics.md is read out of the page and run against facts this test
writes through the engine's own writer, and each result is compared with what the dashboard
should show. A bounce arriving a day after its message was sent counts on the send day, under
the job's provider and campaign, and its parsed details are kept with the raw message.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from engine.inbound.effects import InboundItem, apply
from engine.inbound.evidence import analyse
from engine.store import facts
from engine.store import inbound as inbound_store
from tests.integration.test_inbound import dsn
from tests.integration.test_inbound_trust import _relayed_job

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
_BLOCK = re.compile(r"```sql\n-- name: (\w+)\n(.*?)```", re.S)
D1 = dt.date(2026, 3, 1)
D2 = dt.date(2026, 3, 2)


def queries() -> dict[str, str]:
    """The named queries of docs/analytics.md."""
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def _fact(
    day: dt.date, campaign: str, sender: str, provider: str, outcome: str, reason: str = ""
) -> facts.Fact:
    return facts.Fact("acme", day, campaign, sender, provider, outcome, reason)


async def _dataset(pool: asyncpg.Pool) -> None:
    a, b = "news@acme.example", "sales@acme.example"
    rows: list[facts.Fact] = []
    rows += [_fact(D1, "spring", a, "gmail", "relayed")] * 100
    rows += [_fact(D1, "spring", a, "gmail", "delivered")] * 90
    rows += [_fact(D1, "spring", a, "gmail", "bounced", "userunknown")] * 3
    rows += [_fact(D1, "spring", a, "gmail", "soft_bounced", "mailboxfull")] * 2
    rows += [_fact(D1, "spring", a, "gmail", "complained", "abuse")] * 1
    rows += [_fact(D1, "spring", a, "gmail", "deferred")] * 7
    rows += [_fact(D1, "spring", b, "microsoft", "relayed")] * 50
    rows += [_fact(D1, "spring", b, "microsoft", "bounced", "userunknown")] * 5
    rows += [_fact(D2, "summer", b, "microsoft", "relayed")] * 10
    rows += [_fact(D2, "summer", b, "microsoft", "unsubscribed", "one-click")] * 2
    rows += [facts.Fact("other", D1, "spring", a, "gmail", "relayed")] * 9  # not acme's
    latencies = [facts.Latency("acme", D1, "spring", "relay", ms) for ms in range(0, 1000, 10)]
    latencies += [facts.Latency("acme", D1, "spring", "delivery", 4000.0)] * 9
    latencies += [facts.Latency("acme", D1, "spring", "delivery", 50_000.0)]
    async with pool.acquire() as conn:
        await facts.add(conn, rows, latencies)


def _rows(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return [tuple(float(v) if isinstance(v, Decimal) else v for v in r.values()) for r in records]


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "rates_by_campaign": [
        (D1, "spring", 150, 90, 10, 1, 0, 0.6, 0.0667, 0.0067),
        (D2, "summer", 10, 0, 0, 0, 2, 0.0, 0.0, 0.0),
    ],
    "rates_by_provider": [
        (D1, "gmail", 100, 7, 0.05, 0.01),
        (D1, "microsoft", 50, 0, 0.1, 0.0),
        (D2, "microsoft", 10, 0, 0.0, 0.0),
    ],
    "rates_by_sender": [
        ("news@acme.example", 100, 0.03, 0.01),
        ("sales@acme.example", 60, 0.0833, 0.0),
    ],
    "reasons_by_campaign": [
        ("spring", "bounced", "userunknown", 8),
        ("spring", "soft_bounced", "mailboxfull", 2),
        ("spring", "complained", "abuse", 1),
    ],
    "latency_percentiles": [
        ("spring", "delivery", 10, 5_000, 5_000, 60_000),
        ("spring", "relay", 100, 500, 1_000, 1_000),
    ],
    "campaign_counters": [
        (D1, "bounced", 8),
        (D1, "complained", 1),
        (D1, "deferred", 7),
        (D1, "delivered", 90),
        (D1, "relayed", 150),
        (D1, "soft_bounced", 2),
    ],
}


async def test_every_documented_query_runs_and_answers(pool: asyncpg.Pool, clean_db: str) -> None:
    await _dataset(pool)
    found = queries()
    assert set(found) == set(EXPECTED), "every query of docs/analytics.md needs its expectation"
    for name, sql in found.items():
        got = _rows(await pool.fetch(sql, "acme", D1, D2))
        assert got == EXPECTED[name], name
    # One day only: the next day's campaign is not in it.
    got = _rows(await pool.fetch(found["rates_by_campaign"], "acme", D1, D1))
    assert [r[1] for r in got] == ["spring"]


async def test_late_bounce_counts_on_the_send_day_under_the_jobs_provider(
    pool: asyncpg.Pool, clean_db: str
) -> None:
    mid = "<pm.late.aaaaaaaaaaaaa@acme.example>"
    job_id = await _relayed_job(pool, "late", "late@gmail.test", mid)
    sent = dt.datetime(2026, 3, 1, 23, 30, tzinfo=dt.UTC)
    await pool.execute(
        "UPDATE queue.jobs SET campaign_id = 'spring', provider = 'gmail', relayed_at = $2"
        " WHERE id = $1",
        job_id,
        sent,
    )
    raw = dsn("late@gmail.test", mid, "5.1.1", "550")
    inbound_id = await inbound_store.store_raw(
        pool, raw, peer="192.0.2.1", mail_from="", rcpt_to=["b@x"], verp_job_id=job_id, fbl=False
    )
    a = analyse(raw, None)
    effects = await apply(pool, [InboundItem(inbound_id, a.report, job_id, False, "192.0.2.1")])
    assert [e.kind for e in effects] == ["bounced_hard"]
    rows = await pool.fetch("SELECT * FROM olap.outcome_facts")
    assert [
        (r["day"], r["campaign_id"], r["sender"], r["provider"], r["outcome"], r["reason"], r["n"])
        for r in rows
    ] == [(sent.date(), "spring", "news@acme.example", "gmail", "bounced", "userunknown", 1)]
    # The legacy table too now counts it under the job's provider, not ''.
    assert await pool.fetchval("SELECT provider FROM olap.daily_stats") == "gmail"
    stored = await pool.fetchrow(
        "SELECT dsn_status, dsn_diagnostic, remote_mta, reason FROM content.inbound_messages"
        " WHERE id = $1",
        inbound_id,
    )
    assert stored["dsn_status"] == "5.1.1"
    assert "550 5.1.1 user unknown" in stored["dsn_diagnostic"]
    assert stored["reason"] == "userunknown"
