"""Two daemon instances on one queue (same PostgreSQL, same Redis streams).

Each instance relays to its own fake node, so the sinks tell who sent what. While both run, no
job may arrive twice (the claim in PostgreSQL gives each job to one instance); both must do work.
Then one instance is killed with SIGKILL: the survivor takes over its jobs (dead-consumer
detection + lease release), and the only duplicates are the dead instance's in-flight window.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from engine import sdnotify
from engine.relay.ip_warmup import NODE_PLAN
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
    with (
        FakeMailU() as sink_a,
        FakeMailU() as sink_b,
        closing(sdnotify.Listener()) as notify,
        ExitStack() as cleanup,
    ):
        sinks = [sink_a, sink_b]
        a = DaemonProcess(configure(tmp_path / "a.toml", chaos_env, [sink_a]), notify).start()
        cleanup.callback(a.reap)  # a failing assertion must not leave a daemon running
        b = DaemonProcess(configure(tmp_path / "b.toml", chaos_env, [sink_b]), notify).start()
        cleanup.callback(b.reap)
        # Both ready before the first job exists: on a loaded host one instance can take seconds
        # longer to start, and the other would have sent half the run alone by then.
        a.wait_ready()
        b.wait_ready()
        await prepare(chaos_env.dsn, n)
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


async def test_two_instances_hold_one_warmup_cap(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both daemons relay through the same warming node (each to its own sink, one node name):
    together they relay exactly the node's day-0 cap, and the rest waits, none lost."""
    cap = NODE_PLAN[0]
    n = cap + 200
    await prepare(chaos_env.dsn, 0)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    systemd = sdnotify.Listener()
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.path)
    with FakeMailU() as sink_a, FakeMailU() as sink_b:
        daemons = []
        for name, sink in (("a", sink_a), ("b", sink_b)):
            cfg = configure(tmp_path / f"{name}.toml", chaos_env, [sink])
            text = cfg.read_text().replace(
                "max_connections = 4\n",
                f'max_connections = 4\nwarmup = true\nwarmup_started = "{today}"\n',
            )
            cfg.write_text(text)
            daemons.append(start_daemon(cfg))
        # The jobs come once both say READY=1: with them queued before, the daemon that started
        # first could relay the whole cap (a few hundred ms) before the other one was up.
        pids = {d.proc.pid for d in daemons if d.proc is not None}
        deadline = time.monotonic() + 60
        while not pids <= systemd.ready and time.monotonic() < deadline:
            systemd.wait(0.1)
            systemd.poll()
        systemd.close()
        assert pids <= systemd.ready, "both daemons ready"
        await prepare(chaos_env.dsn, n)
        await wait_for(chaos_env.dsn, relayed(cap), 120, daemons[0])
        await asyncio.sleep(3.0)  # the rest keeps being retried meanwhile
        final = await wait_for(chaos_env.dsn, lambda c: c.get("sending", 0) == 0, 30)
        sent = sink_a.count() + sink_b.count()
        assert sent == cap, f"{sent} relayed through a node capped at {cap} today"
        assert sink_a.count() > 0 and sink_b.count() > 0, "both instances sent"
        assert final.get("relayed", 0) == cap
        assert final.get("deferred", 0) + final.get("queued", 0) == n - cap, final
        for d in daemons:
            assert d.terminate() == 0, d.log.read_text()[-3000:]
    record("two_instances_warmup_cap", jobs=n, cap=cap, relayed=sent, shares=[sink_a.count()])
