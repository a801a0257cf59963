"""Soak: thousands of jobs across 3 fake MailU nodes that randomly answer 4xx, hang up before or
after DATA, while 2% of recipients are permanently refused (5xx).

At the end the accounting must balance exactly:
- every job is in a final state (the queue drains: nothing queued, deferred or sending, no stream
  entry pending in Redis);
- PostgreSQL's relayed Message-IDs are exactly the unique Message-IDs the sinks received;
- failed jobs are exactly the refused recipients, and none of them was ever received;
- the OLAP counters agree with the job table;
- duplicates at the sinks come only from "accepted, then hung up" replies (at most one each);
- the daemon's RSS stays flat.

Random 5xx are injected only as permanent per-recipient refusals: a random 5xx for a job that a
lying node had already accepted would make "failed but received" correct, and the check fuzzy.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.queue.streams import GROUP, Streams
from engine.store import tenants
from engine.store.migrate import migrate
from engine.store.pool import connect, connect_one
from tests.chaos.conftest import (
    ChaosEnv,
    configure,
    duplicates,
    message_ids,
    received_ids,
    record,
    rss_mb,
)
from tests.chaos.harness import DaemonProcess, counts
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos

HARD_EVERY = 50  # 2% of recipients are refused with 550 by every node
SENDER_DOMAINS = 9  # affinity is per sender domain: spread the load over the 3 nodes
_FINAL = ("relayed", "failed", "bounced", "suppressed", "cancelled", "complained")


def recipient(i: int) -> str:
    return f"hard{i}@example.com" if i % HARD_EVERY == 0 else f"user{i}@example.com"


async def _prepare(dsn: str, n: int) -> None:
    await migrate(dsn)
    pool = await connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await tenants.add(pool, "acme")
        for start in range(0, n, 20000):
            lines = [
                orjson.dumps(
                    {
                        "tenant_id": "acme",
                        "idempotency_key": f"k{i}",
                        "from": f"news@s{i % SENDER_DOMAINS}.acme.example",
                        "to": recipient(i),
                        "subject": "soak",
                        "text": "body " * (i % 20),
                    }
                )
                for i in range(start, min(n, start + 20000))
            ]
            res = await enqueue(pool, lines, max_message_bytes=10**6, max_age_s=3600)
            assert all(r.error is None for r in res)
    finally:
        await pool.close()


class Monkey:
    """Injects a random transient fault into a node once per ``every`` messages it received.

    Driven by traffic, not by the clock: a clock-driven monkey keeps a fault pending on every
    node while the last few retries trickle in, and no job can ever get through (a node that
    fails every attempt is a dead node, another test).
    """

    def __init__(self, nodes: list[FakeMailU], seed: int, every: int) -> None:
        self.nodes = nodes
        self.rng = random.Random(seed)
        self.every = every
        self.seen = [0] * len(nodes)
        self.injected: dict[str, int] = {}
        self.accepted_drops = 0

    def _one(self, node: FakeMailU) -> None:
        rng = self.rng
        kind = rng.choice(["4xx", "4xx", "drop", "drop_after_data", "accept_then_drop"])
        if kind == "4xx":
            stage = rng.choice(["MAIL", "RCPT", "DATA"])
            code, text = rng.choice([(421, "4.7.0 try later"), (451, "4.3.0 busy"),
                                     (452, "4.2.2 mailbox full")])  # fmt: skip
            node.set_reply(stage, code, text, times=rng.randint(1, 3))  # type: ignore[arg-type]
        elif kind == "drop":
            node.drop(rng.choice(["MAIL", "RCPT"]), 1)  # type: ignore[arg-type]
        elif kind == "drop_after_data":
            node.drop_after_data(1, accept=False)
        else:
            # A pending accept-drop not yet used is replaced, not added to: count only new ones.
            if "DATA" not in node._faults.drops:
                self.accepted_drops += 1
            node.drop_after_data(1, accept=True)
        self.injected[kind] = self.injected.get(kind, 0) + 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for i, node in enumerate(self.nodes):
                got = node.count()
                if got - self.seen[i] >= self.every:
                    self.seen[i] = got
                    self._one(node)
            await asyncio.sleep(0.01)


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append((time.monotonic(), rss_mb(self.pid)))
            await asyncio.sleep(0.25)

    def growth(self) -> tuple[float, float, float]:
        """(median RSS over the 2nd quarter of the run, over the last quarter, growth)."""
        values = [v for _, v in self.samples]
        q = max(1, len(values) // 4)
        early, late = statistics.median(values[q : 2 * q]), statistics.median(values[-q:])
        return early, late, late - early


async def _streams_pending(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        total = 0
        for key in Streams(client, "pm").keys:
            if await client.exists(key):
                total += int((await client.xpending(key, GROUP))["pending"])
        return total
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("n", "max_growth_mb"),
    [
        pytest.param(5000, 30.0, id="5k-jobs"),
        pytest.param(200_000, 30.0, id="200k-jobs", marks=pytest.mark.slow),
    ],
)
async def test_soak_accounting_balances(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    n: int,
    max_growth_mb: float,
) -> None:
    await _prepare(chaos_env.dsn, n)
    hard = {recipient(i) for i in range(0, n, HARD_EVERY)}
    nodes = [FakeMailU().start() for _ in range(3)]
    try:
        for node in nodes:
            node.fail_rcpt(r"^hard\d+@", 550, "5.1.1 no such user")
        cfg = configure(
            tmp_path / "engine.toml",
            chaos_env,
            nodes,
            queue={"max_in_flight": 128, "batch_size": 128},
            relay={"health_interval_s": 0.5, "breaker_failures": 5},
        )
        daemon = start_daemon(cfg)
        assert daemon.proc is not None
        stop = asyncio.Event()
        monkey = Monkey(nodes, seed=n, every=20)
        sampler = RssSampler(daemon.proc.pid)
        tasks = [asyncio.create_task(monkey.run(stop)), asyncio.create_task(sampler.run(stop))]
        started = time.monotonic()
        deadline = started + 120 + n / 40
        try:
            while True:
                c = await counts(chaos_env.dsn)
                if sum(c.get(s, 0) for s in _FINAL) >= n:
                    break
                assert daemon.alive(), daemon.log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"queue did not drain: {c}"
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)  # let the last acks land
        assert await _streams_pending(chaos_env.url) == 0, "stream entries left unacknowledged"
        assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]

        final = await counts(chaos_env.dsn)
        assert final == {"relayed": n - len(hard), "failed": len(hard)}, final
        relayed_ids = await message_ids(chaos_env.dsn, "relayed")
        assert relayed_ids == received_ids(nodes), "PostgreSQL and the sinks disagree"
        conn = await connect_one(chaos_env.dsn)
        try:
            failed = {r["recipient"] for r in await conn.fetch(
                "SELECT recipient FROM queue.jobs WHERE state = 'failed'")}  # fmt: skip
            stats = await conn.fetchrow(
                "SELECT sum(relayed) AS relayed, sum(failed) AS failed FROM olap.daily_stats"
            )
        finally:
            await conn.close()
        assert failed == hard
        got = {r for node in nodes for m in node.received for r in m.rcpt_tos}
        assert not got & hard, "a refused recipient was received"
        assert (stats["relayed"], stats["failed"]) == (n - len(hard), len(hard))
        unique, dups = duplicates(nodes)
        assert unique == n - len(hard)
        assert dups <= monkey.accepted_drops, f"{dups} duplicates, {monkey.accepted_drops} lies"
        assert all(node.count() > 0 for node in nodes), "every node took part"
        early, late, growth = sampler.growth()
        assert growth < max_growth_mb, f"RSS grew {growth:.1f} MB ({early:.0f} -> {late:.0f})"
    finally:
        for node in nodes:
            node.close()
    record(
        "soak",
        jobs=n,
        seconds=round(elapsed, 1),
        msg_s=round(n / elapsed),
        faults=monkey.injected,
        relayed=n - len(hard),
        failed=len(hard),
        lost=0,
        duplicates=dups,
        accepted_drops=monkey.accepted_drops,
        rss_mb_early=round(early, 1),
        rss_mb_late=round(late, 1),
    )
