"""Relay nodes failing under a running daemon: a node goes down and returns; a node lies.

Every job must end relayed, counted at the sinks by Message-ID: all of them arrive, PostgreSQL's
relayed Message-IDs are exactly the ones received, and the only duplicates are those the fault
itself makes unavoidable (a node that took the message and hung up before saying so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.conftest import (
    ChaosEnv,
    configure,
    duplicates,
    message_ids,
    poll,
    received_ids,
    record,
)
from tests.chaos.harness import DaemonProcess, prepare, wait_for
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos

IN_FLIGHT = 64
RELAY = {"health_interval_s": 0.5, "breaker_failures": 3}
#: The fake nodes' delay before each DATA reply where a run must outlast a fault.
PACE_S = 0.02


def relayed(n: int) -> object:
    return lambda c: c.get("relayed", 0) >= n


async def finish(
    env: ChaosEnv, daemon: DaemonProcess, nodes: list[FakeMailU], n: int, timeout: float
) -> int:
    final = await wait_for(env.dsn, relayed(n), timeout, daemon)
    assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]
    assert final.get("sending", 0) == 0 and sum(final.values()) == n, final
    unique, dups = duplicates(nodes)
    assert unique == n, "every job reached a relay"
    assert await message_ids(env.dsn, "relayed") == received_ids(nodes)
    return dups


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(1500, id="1500-jobs"),
        pytest.param(30000, id="30k-jobs", marks=pytest.mark.slow),
    ],
)
async def test_node_down_fails_over_and_comes_back(
    chaos_env: ChaosEnv, tmp_path: Path, start_daemon: Callable[[Path], DaemonProcess], n: int
) -> None:
    """The node the sender is pinned to goes down mid-run: mail fails over to the other node at
    once, nothing is lost, and when the node returns the sender goes back to it."""
    await prepare(chaos_env.dsn, n)
    with FakeMailU() as a, FakeMailU() as b:
        nodes = [a, b]
        for node in nodes:
            # Paced (20 ms a DATA reply per connection): on a fast idle host the unpaced run
            # relayed its last half before the node was back in use (~0.6 s), and the test then
            # waited for mail that no longer existed.
            node.set_delay("DATA", PACE_S)
        cfg = configure(tmp_path / "engine.toml", chaos_env, nodes, relay=RELAY)
        daemon = start_daemon(cfg)
        await wait_for(chaos_env.dsn, relayed(n // 6), 60, daemon)
        primary, other = (a, b) if a.count() >= b.count() else (b, a)
        assert other.count() == 0, "affinity: one sender domain stays on one node"
        primary.stop()
        down_at = other.count()
        failover_s = await poll(lambda: other.count() > down_at + 50, 30, "failover")
        await wait_for(chaos_env.dsn, relayed(n // 2), 60 + n / 50, daemon)
        assert daemon.alive()
        assert primary.count() + other.count() < n * 9 // 10, (
            "the run ended before the node came back: pace the relay more"
        )
        primary.start()  # same port
        back_at = primary.count()
        return_s = await poll(lambda: primary.count() > back_at, 30, "the node to get mail again")
        dups = await finish(chaos_env, daemon, nodes, n, 60 + n / 50)
        # Cutting connections can lose a 250 already written: the in-flight window.
        assert dups <= IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"
    record(
        "relay_node_down",
        jobs=n,
        lost=0,
        duplicates=dups,
        failover_s=round(failover_s, 2),
        node_back_s=round(return_s, 2),
    )


async def test_node_that_drops_after_data_duplicates_only_those(
    chaos_env: ChaosEnv, tmp_path: Path, start_daemon: Callable[[Path], DaemonProcess]
) -> None:
    """A node reads DATA, queues the mail, and hangs up without a reply (ten times); it also hangs
    up at MAIL and RCPT without queueing anything. Only the ten can arrive twice, and do."""
    n = 800
    accepted_drops = 10
    await prepare(chaos_env.dsn, n)
    with FakeMailU() as a, FakeMailU() as b:
        nodes = [a, b]
        cfg = configure(tmp_path / "engine.toml", chaos_env, nodes, relay=RELAY)
        daemon = start_daemon(cfg)
        await wait_for(chaos_env.dsn, relayed(50), 60, daemon)
        primary = a if a.count() >= b.count() else b
        primary.drop("MAIL", 3)
        primary.drop("RCPT", 3)
        for _ in range(accepted_drops):  # spread out, so the breaker sees isolated failures
            primary.drop_after_data(1, accept=True)
            # 60 s: the MAIL/RCPT drops may have opened the primary's breaker, and then it gets
            # no mail until its 30 s cooldown ends (seen once in a full run on a loaded box).
            await poll(lambda: "DATA" not in primary._faults.drops, 60, "the drop to be used")
            await asyncio.sleep(0.1)
        dups = await finish(chaos_env, daemon, nodes, n, 90)
        # Each accepted-then-dropped message was deferred and sent again: exactly one extra copy.
        assert dups == accepted_drops, f"{dups} duplicates for {accepted_drops} lying replies"
    record("relay_drop_after_data", jobs=n, lost=0, accepted_drops=accepted_drops, duplicates=dups)
