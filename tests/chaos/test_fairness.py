"""Waiting behind someone else's campaign (issue 20): while tenant A's campaign flows at the
relay's full rate, tenant B's jobs and A's own high-priority message go out within seconds,
because the streams hold only ``[queue] stream_backlog_s`` of work, not the whole campaign.

The relay is slowed (a delay before each DATA reply) so the campaign lasts several seconds
whatever the host's speed; the measured figures go to the reliability report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.store import tenants
from engine.store.migrate import migrate
from engine.store.pool import connect
from tests.chaos.conftest import ChaosEnv, configure, record
from tests.chaos.harness import DaemonProcess, wait_for
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos


def line(tenant: str, key: str, to: str, priority: str = "normal") -> bytes:
    return orjson.dumps(
        {
            "tenant_id": tenant,
            "idempotency_key": key,
            "from": f"news@{tenant}.example",
            "to": to,
            "subject": "fairness",
            "text": "body",
            "priority": priority,
        }
    )


async def submit(dsn: str, lines: list[bytes]) -> None:
    pool = await connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        res = await enqueue(pool, lines, max_message_bytes=10**6, max_age_s=3600)
        assert all(r.error is None for r in res), [r.error for r in res if r.error][:3]
    finally:
        await pool.close()


def arrived(node: FakeMailU, prefix: str) -> int:
    return sum(1 for m in node.received if m.rcpt_tos[0].startswith(prefix))


async def first_time_all(node: FakeMailU, prefix: str, n: int, timeout: float) -> float:
    start = time.monotonic()
    while arrived(node, prefix) < n:
        assert time.monotonic() - start < timeout, f"{prefix}: {arrived(node, prefix)}/{n}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


SIZES = [
    pytest.param(2000, 0.02, id="2000-jobs"),
    pytest.param(5000, 0.005, id="5000-jobs", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("campaign", "data_delay_s"), SIZES)
async def test_another_tenant_waits_seconds_not_the_campaign(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    campaign: int,
    data_delay_s: float,
) -> None:
    dsn = chaos_env.dsn
    await migrate(dsn)
    pool = await connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        for tenant in ("acme", "bee"):
            await tenants.add(pool, tenant)
    finally:
        await pool.close()
    await submit(dsn, [line("acme", f"a{i}", f"a{i}@example.com") for i in range(campaign)])
    with FakeMailU() as node:
        node.set_delay("DATA", data_delay_s)
        cfg = configure(
            tmp_path / "engine.toml",
            chaos_env,
            [node],
            # Floors sized for this slowed relay (the shipped ones suit hundreds of msg/s).
            queue={
                "max_in_flight": 64,
                "batch_size": 64,
                "feeder_interval_s": 1.0,
                "stream_backlog_min": 16,
                "in_flight_min": 16,
            },
        )
        daemon = start_daemon(cfg)
        await wait_for(dsn, lambda c: c.get("relayed", 0) >= campaign // 10, 120, daemon)
        # The campaign is flowing: B's jobs and A's urgent message arrive now.
        t0 = time.monotonic()
        a_at_t0 = arrived(node, "a")
        await asyncio.gather(
            submit(dsn, [line("bee", f"b{i}", f"bee{i}@example.com") for i in range(50)]),
            submit(dsn, [line("acme", "vip", "vip@example.com", priority="high")]),
        )
        enqueued_s = time.monotonic() - t0
        waits = await asyncio.gather(
            first_time_all(node, "bee", 50, 60), first_time_all(node, "vip", 1, 60)
        )
        b_s, high_s = (w + enqueued_s for w in waits)
        a_before_b = arrived(node, "a") - a_at_t0
        await wait_for(dsn, lambda c: c.get("relayed", 0) >= campaign + 51, 180, daemon)
        total_s = time.monotonic() - t0  # from B's arrival to the end of the campaign
        assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]
    record(
        "fairness_campaign",
        campaign=campaign,
        tenant_b_50_jobs_s=round(b_s, 2),
        high_priority_s=round(high_s, 2),
        campaign_relayed_meanwhile=a_before_b,
        rest_of_run_s=round(total_s, 1),
    )
    # B waits behind about a second of A's work, not behind the campaign (cap off: ~90% of it).
    assert a_before_b <= 250, f"{a_before_b} of A's messages went before B's were done"
    # The targets hold at the rate this relay allows (~200 msg/s); on a CPU-starved host the
    # same work ahead takes longer, so the bound follows the rate measured in this run.
    rate = (campaign - a_at_t0 + 51) / total_s
    slack = max(1.0, 150 / rate)
    assert b_s <= 2.0 * slack, f"tenant B waited {b_s:.2f}s at {rate:.0f} msg/s"
    assert high_s <= 1.0 * slack, f"the high-priority message waited {high_s:.2f}s"
