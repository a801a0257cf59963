"""The IP warm-up cap is one budget per node, shared by every instance and kept across restarts
(issue 22 item 5): two relay pools, each its own "daemon", against one Redis counter."""

from __future__ import annotations

import asyncio
import datetime as dt

import redis.asyncio as aioredis

from engine.config import Config, RelayConfig
from engine.model import OutcomeKind
from engine.relay.ip_warmup import NODE_PLAN
from engine.relay.node_budget import RedisWarmupLedger
from engine.relay.pool import NO_RELAY_AVAILABLE, RelayPool
from tests.fakes.mailu import FakeMailU


def _relay(node: FakeMailU) -> RelayConfig:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return RelayConfig(nodes=[node.relay_node("warm", warmup=True, warmup_started=today)])


async def test_two_instances_share_one_warmup_cap_across_restarts(
    cfg: Config, redis_client: aioredis.Redis
) -> None:
    cap = NODE_PLAN[0]
    with FakeMailU() as node:
        node.fail_rcpt(r"^refused", 550, "5.1.1 no such user")
        pools = [
            RelayPool(_relay(node), warmup_ledger=RedisWarmupLedger(redis_client, cfg.redis.prefix))
            for _ in range(2)
        ]
        for p in pools:
            await p.start(health_checks=False)
        try:
            # 20 refused recipients first: not relayed, so they give their unit back.
            refused = await asyncio.gather(
                *(pools[i % 2].send("b@x.test", f"refused{i}@y.test", b"x") for i in range(20))
            )
            assert all(r.kind is OutcomeKind.FAILED for r in refused)
            sem = asyncio.Semaphore(16)

            async def send(i: int) -> OutcomeKind:
                async with sem:
                    r = await pools[i % 2].send("b@x.test", f"u{i}@y.test", b"hello\r\n")
                    return r.kind

            kinds = await asyncio.gather(*(send(i) for i in range(cap + 60)))
            assert kinds.count(OutcomeKind.RELAYED) == cap, "both instances together: the cap"
            assert node.count() == cap
            assert all(p.warmup.sent_today("warm") > cap // 4 for p in pools), "both sent"
            # A restarted instance sees the day's count: nothing more today.
            await pools[0].close()
            pools[0] = RelayPool(
                _relay(node), warmup_ledger=RedisWarmupLedger(redis_client, cfg.redis.prefix)
            )
            await pools[0].start(health_checks=False)
            late = await pools[0].send("b@x.test", "late@y.test", b"x")
            assert late.kind is OutcomeKind.DEFERRED and late.reply == NO_RELAY_AVAILABLE
            ledger = RedisWarmupLedger(redis_client, cfg.redis.prefix)
            assert await ledger.sent("warm", dt.datetime.now(dt.UTC).date()) == cap
        finally:
            for p in pools:
                await p.close()
