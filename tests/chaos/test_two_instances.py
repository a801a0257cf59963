"""Two daemon instances on one queue (same PostgreSQL, same Redis streams).

Each instance relays to its own fake node, so the sinks tell who sent what. While both run, no
job may arrive twice (the claim in PostgreSQL gives each job to one instance); both must do work.
Then one instance is killed with SIGKILL: the survivor takes over its jobs (dead-consumer
detection + lease release), and the only duplicates are the dead instance's in-flight window.
"""

from __future__ import annotations

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


def relayed(n: int) -> object:
    return lambda c: c.get("relayed", 0) >= n


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(2000, id="2000-jobs"),
        pytest.param(40000, id="40k-jobs", marks=pytest.mark.slow),
    ],
)
async def test_two_instances_share_the_queue_without_double_sends(
    chaos_env: ChaosEnv, tmp_path: Path, start_daemon: Callable[[Path], DaemonProcess], n: int
) -> None:
    await prepare(chaos_env.dsn, n)
    with FakeMailU() as sink_a, FakeMailU() as sink_b:
        sinks = [sink_a, sink_b]
        a = DaemonProcess(configure(tmp_path / "a.toml", chaos_env, [sink_a])).start()
        b = DaemonProcess(configure(tmp_path / "b.toml", chaos_env, [sink_b])).start()
        await wait_for(chaos_env.dsn, relayed(n // 2), 60 + n / 50, a)
        assert b.alive()
        _, dups_both_running = duplicates(sinks)
        assert dups_both_running == 0, "a job was sent by both instances"
        assert sink_a.count() > n // 10 and sink_b.count() > n // 10, (
            f"both instances must work: {sink_a.count()} / {sink_b.count()}"
        )
        share_a = sink_a.count()

        a.kill9()
        at_kill = sink_b.count()
        await poll(lambda: sink_b.count() > at_kill + 20, 30, "the survivor to keep sending")
        final = await wait_for(chaos_env.dsn, relayed(n), 60 + n / 50, b)
        assert b.terminate() == 0, b.log.read_text()[-3000:]
        assert final.get("sending", 0) == 0 and sum(final.values()) == n, final
        unique, dups = duplicates(sinks)
        assert unique == n, "every job reached a relay"
        assert await message_ids(chaos_env.dsn, "relayed") == received_ids(sinks)
        assert dups <= IN_FLIGHT, f"{dups} duplicates beyond the killed instance's in-flight"
    record(
        "two_instances",
        jobs=n,
        lost=0,
        duplicates_both_running=dups_both_running,
        duplicates_after_kill=dups,
        share_a_at_half=round(share_a / (n // 2), 2),
    )
