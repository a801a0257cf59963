"""Every inbound outcome carries its job's provider (issue 23, item 7).

A bounce or complaint about a job to gmail.test is counted in ``olap.daily_stats`` under the
provider the send path counted it under (the shaper's MX rollup, looked up once per batch), and
its event names the provider and the node that relayed it. Without shaping, or when the lookup
fails, the batch still applies and the outcomes are counted with provider ``''``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
import orjson
import pytest

from engine.dkim.keys import generate_key
from engine.inbound.effects import InboundItem, SignalSink, apply
from engine.inbound.evidence import analyse
from engine.inbound.trust import InboundTrust
from engine.shaping.model import DeliverySignal, Provider, SignalKind
from tests.integration.test_inbound import arf, dsn
from tests.integration.test_inbound_trust import _relayed_job, reporter_config

GMAIL = Provider("gmail", rate_per_s=10.0, max_connections=5, max_messages_per_connection=100)
REPORTER_PEER = "192.0.2.7"  # allowed by the isp.example reporter's SPF record


class Sink:
    """The shaping side effects.py feeds: resolves gmail.test to "gmail", records signals."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.lookups: list[set[str]] = []
        self.seen: list[DeliverySignal] = []

    def record(self, signal: DeliverySignal | None) -> None:
        if signal is not None:
            self.seen.append(signal)

    async def resolve_providers(self, domains: Iterable[str]) -> Mapping[str, Any]:
        self.lookups.append(set(domains))
        if self.fail:
            raise OSError("resolver down")
        return {d: GMAIL for d in self.lookups[-1] if d == "gmail.test"}


async def _batch(pool: asyncpg.Pool) -> tuple[list[InboundItem], dict[str, int]]:
    """A proven hard bounce, soft bounce (VERP) and complaint (authenticated reporter), each
    about its own job to gmail.test, relayed by node mailu-1."""
    mids = {k: f"<pm.p{k}.aaaaaaaaaaaaa@acme.example>" for k in ("hard", "soft", "fbl")}
    jobs = {k: await _relayed_job(pool, f"p-{k}", f"{k}@gmail.test", mids[k]) for k in mids}
    await pool.execute("UPDATE queue.jobs SET relay_node = 'mailu-1'")
    items = []
    for key, raw in (
        ("hard", dsn("hard@gmail.test", mids["hard"], "5.1.1", "550")),
        ("soft", dsn("soft@gmail.test", mids["soft"], "4.2.2", "452")),
    ):
        a = analyse(raw, None)
        items.append(InboundItem(0, a.report, jobs[key], False, REPORTER_PEER, "", a.evidence))
    a = analyse(arf("fbl@gmail.test", mids["fbl"]), None)
    items.append(
        InboundItem(0, a.report, None, True, REPORTER_PEER, "fbl@fbl.isp.example", a.evidence)
    )
    return items, jobs


def _trust(clean_db: str, redis_prefix: str) -> InboundTrust:
    _, record = generate_key("rsa-sha256", 1024)
    return InboundTrust.from_config(reporter_config(clean_db, redis_prefix, record, "spf"))


async def _stats(pool: asyncpg.Pool) -> list[tuple[str, int, int, int]]:
    rows = await pool.fetch(
        "SELECT provider, bounced_hard, bounced_soft, complained FROM olap.daily_stats"
        " ORDER BY provider"
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def _event_data(pool: asyncpg.Pool) -> dict[str, dict[str, str]]:
    rows = await pool.fetch(
        "SELECT kind, data::text AS data FROM oltp.events"
        " WHERE kind IN ('bounced', 'soft_bounced', 'complained')"
    )
    return {r["kind"]: orjson.loads(r["data"]) for r in rows}


async def test_bounces_and_complaints_are_counted_under_the_jobs_provider(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str
) -> None:
    items, _ = await _batch(pool)
    sink = Sink()
    effects = await apply(pool, items, shaping=sink, trust=_trust(clean_db, redis_prefix))

    assert [e.kind for e in effects] == ["bounced_hard", "bounced_soft", "complained"]
    assert await _stats(pool) == [("gmail", 1, 1, 1)]
    node = {"sender": "news@acme.example", "provider": "gmail", "node": "mailu-1"}
    assert await _event_data(pool) == {"bounced": node, "soft_bounced": node, "complained": node}
    # one lookup per batch, shared by the counters and the shaping signals
    assert sink.lookups == [{"gmail.test"}]
    assert [(s.kind, s.provider) for s in sink.seen] == [
        (SignalKind.HARD_BOUNCE, "gmail"),
        (SignalKind.SOFT_BOUNCE, "gmail"),
        (SignalKind.COMPLAINT, "gmail"),
    ]


@pytest.mark.parametrize("shaping", ["failing", "off"])
async def test_without_a_provider_the_batch_still_applies(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    shaping: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    items, jobs = await _batch(pool)
    sink: SignalSink | None = Sink(fail=True) if shaping == "failing" else None
    with caplog.at_level(logging.WARNING, logger="engine.inbound"):
        effects = await apply(pool, items, shaping=sink, trust=_trust(clean_db, redis_prefix))

    assert [e.kind for e in effects] == ["bounced_hard", "bounced_soft", "complained"]
    states = await pool.fetch("SELECT id, state FROM queue.jobs")
    assert {r["id"]: r["state"] for r in states} == {
        jobs["hard"]: "bounced",
        jobs["soft"]: "bounced",
        jobs["fbl"]: "complained",
    }
    assert await _stats(pool) == [("", 1, 1, 1)]
    unknown = {"sender": "news@acme.example", "node": "mailu-1"}
    assert await _event_data(pool) == {
        "bounced": unknown,
        "soft_bounced": unknown,
        "complained": unknown,
    }
    failed = [r for r in caplog.records if "provider lookup" in r.getMessage()]
    if isinstance(sink, Sink):
        assert len(failed) == 1
        # shaping still hears of them, under the recipient domain as before
        assert {s.provider for s in sink.seen} == {"gmail.test"}
    else:
        assert failed == []
