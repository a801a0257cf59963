"""Throughput of the relay pool to the fake node: plain, 1 node, 8 connections.

The client and the fake server share one process (and one GIL), so this is a floor for the pool,
not a figure for a real MailU. It prints the rate; run with ``-s`` to see it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.config import RelayConfig
from engine.model import OutcomeKind
from engine.relay import RelayPool
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

MESSAGES = 1500
CONCURRENCY = 64

BODY = b"Subject: bench\r\nFrom: a@sender.test\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26  # ~2 KB


@pytest.mark.timeout(60)
async def test_pool_throughput_plain_one_node(mailu: FakeMailU) -> None:
    node = mailu.relay_node("a", max_connections=8, max_messages_per_connection=100_000)
    cfg = RelayConfig(nodes=[node], helo_name="engine.test")
    async with RelayPool(cfg) as pool:
        ids = iter(range(MESSAGES))
        relayed = 0

        async def worker() -> None:
            nonlocal relayed
            for i in ids:
                msg = b"Message-ID: <bench-%d@sender.test>\r\n" % i + BODY
                result = await pool.send("a@sender.test", ["r@example.test"], msg)
                relayed += result.kind is OutcomeKind.RELAYED

        # Warm the sessions up so the figure is steady-state sending, not connecting.
        await asyncio.gather(*(pool.send("a@x.test", ["r@x.test"], BODY) for _ in range(8)))
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
    rate = MESSAGES / elapsed
    print(f"\nrelay pool → fake MailU: {rate:.0f} msg/s ({MESSAGES} msgs, 8 connections)")
    assert relayed == MESSAGES
    assert mailu.count() == MESSAGES + 8
    assert mailu.connections <= 8
    # A sanity floor only: the figure depends on the machine (and on what else runs on it).
    assert rate > 50
