"""PostgreSQL and Redis misbehaving under a running daemon: restarted, frozen, locked, "disk full".

Each test runs the real daemon as a subprocess against the shared throwaway servers (a fresh
database each) and a fake MailU node. Success: the daemon never exits, every job ends relayed
with nothing left in ``sending``, PostgreSQL's relayed Message-IDs are exactly what the sink
received, and duplicates stay within the in-flight window. While PostgreSQL is unusable the daemon
may only finish what it had already claimed (back-pressure: at most ``max_in_flight`` messages
reach the sink) and its memory must not grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.store.pool import connect_one
from tests.chaos.conftest import (
    ChaosEnv,
    configure,
    duplicates,
    message_ids,
    poll,
    received_ids,
    record,
    rss_mb,
)
from tests.chaos.harness import DaemonProcess, prepare, wait_for
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos

IN_FLIGHT = 64


def relayed(n: int) -> object:
    return lambda c: c.get("relayed", 0) >= n


async def finish(
    env: ChaosEnv, daemon: DaemonProcess, node: FakeMailU, n: int, timeout: float = 120
) -> tuple[dict[str, int], int]:
    """Wait for every job to be relayed, stop the daemon, check the accounting; returns dups."""
    final = await wait_for(env.dsn, relayed(n), timeout, daemon)
    assert daemon.terminate() == 0, daemon.log.read_text()[-3000:]
    assert final.get("sending", 0) == 0, final
    assert sum(final.values()) == n, final
    unique, dups = duplicates([node])
    assert unique == n, "every job reached the relay"
    assert await message_ids(env.dsn, "relayed") == received_ids([node])
    return final, dups


SIZES = [
    pytest.param(1200, 1, id="1200-jobs-1-restart"),
    pytest.param(30000, 4, id="30k-jobs-4-restarts", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("n", "restarts"), SIZES)
async def test_postgres_restart_mid_run(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    n: int,
    restarts: int,
) -> None:
    """PostgreSQL stops (fast shutdown, every backend terminated) and restarts on the same port
    and data directory: the daemon pauses, reconnects its pool and LISTEN, and resumes."""
    await prepare(chaos_env.dsn, n)
    recoveries: list[float] = []
    sent_down: list[int] = []
    with FakeMailU() as node:
        cfg = configure(tmp_path / "engine.toml", chaos_env, [node])
        daemon = start_daemon(cfg)
        for k in range(restarts):
            await wait_for(chaos_env.dsn, relayed(n * (k + 1) // (restarts + 2)), 120, daemon)
            before = node.count()
            chaos_env.pg.stop()
            await asyncio.sleep(3.0)
            assert daemon.alive(), daemon.log.read_text()[-3000:]
            during = node.count() - before
            assert during <= IN_FLIGHT, f"{during} sent with PostgreSQL down (only in flight)"
            sent_down.append(during)
            chaos_env.pg.start()
            at_restart = node.count()
            recoveries.append(
                await poll(lambda m=at_restart: node.count() > m + 20, 60, "sending to resume")
            )
        _, dups = await finish(chaos_env, daemon, node, n, timeout=60 + n / 50)
        assert dups <= restarts * IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"
    record(
        "postgres_restart",
        jobs=n,
        restarts=restarts,
        lost=0,
        duplicates=dups,
        sent_while_down=max(sent_down),
        recovery_s=round(max(recoveries), 2),
    )


@pytest.mark.parametrize(("n", "restarts"), SIZES)
async def test_redis_restart_mid_run(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    n: int,
    restarts: int,
) -> None:
    """Redis dies (nothing persisted) and comes back empty: the reconciler re-pushes from PG."""
    await prepare(chaos_env.dsn, n)
    recoveries: list[float] = []
    with FakeMailU() as node:
        cfg = configure(tmp_path / "engine.toml", chaos_env, [node])
        daemon = start_daemon(cfg)
        for k in range(restarts):
            await wait_for(chaos_env.dsn, relayed(n * (k + 1) // (restarts + 2)), 120, daemon)
            chaos_env.redis.stop()
            await asyncio.sleep(2.0)
            assert daemon.alive(), daemon.log.read_text()[-3000:]
            chaos_env.redis.start()
            at_restart = node.count()
            recoveries.append(
                await poll(lambda m=at_restart: node.count() > m + 20, 60, "sending to resume")
            )
        _, dups = await finish(chaos_env, daemon, node, n, timeout=60 + n / 50)
        assert dups <= restarts * IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"
    record(
        "redis_restart",
        jobs=n,
        restarts=restarts,
        lost=0,
        duplicates=dups,
        recovery_s=round(max(recoveries), 2),
    )


def _cluster_pids(postmaster: int) -> list[int]:
    """The postmaster and every backend/auxiliary process it forked."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == postmaster:
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def frozen(env: ChaosEnv) -> Iterator[None]:
    """Every PostgreSQL process stopped (SIGSTOP): a server stuck on a dead disk or in swap."""
    assert env.pg.proc is not None
    pids = _cluster_pids(env.pg.proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


_DISK_FULL = """
CREATE OR REPLACE FUNCTION public.chaos_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file "base/16384/16400": No space left on device'
        USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';
END $$;
CREATE TRIGGER chaos_disk_full BEFORE INSERT OR UPDATE ON queue.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION public.chaos_disk_full();
"""


async def _stall(
    what: str, daemon: DaemonProcess, node: FakeMailU, seconds: float
) -> dict[str, float]:
    """Watch the daemon while PostgreSQL is unusable: alive, bounded output, flat memory."""
    assert daemon.proc is not None
    base, rss0 = node.count(), rss_mb(daemon.proc.pid)
    deadline = time.monotonic() + seconds
    peak = rss0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        assert daemon.alive(), f"daemon died during {what}: {daemon.log.read_text()[-3000:]}"
        peak = max(peak, rss_mb(daemon.proc.pid))
    grew = node.count() - base
    assert grew <= IN_FLIGHT, f"{what}: {grew} sent while PostgreSQL was unusable"
    assert peak - rss0 < 40, f"{what}: RSS grew {peak - rss0:.0f} MB during the stall"
    return {f"{what}_sent_during": grew, f"{what}_rss_growth_mb": round(peak - rss0, 1)}


@pytest.mark.parametrize(
    ("n", "stall_s"),
    [
        pytest.param(1500, 3.0, id="1500-jobs-3s-stalls"),
        pytest.param(20000, 12.0, id="20k-jobs-12s-stalls", marks=pytest.mark.slow),
    ],
)
async def test_slow_postgres_is_back_pressure_not_a_crash(
    chaos_env: ChaosEnv,
    tmp_path: Path,
    start_daemon: Callable[[Path], DaemonProcess],
    n: int,
    stall_s: float,
) -> None:
    """A table lock, a frozen server and "no space left on device", each longer than the
    command timeout: the daemon waits, retries, and finishes the run without loss.

    A real full disk cannot be made safely here (no loop mount or quota in CI containers, and a
    full /tmp would break the rest of the suite), so PostgreSQL is made to answer exactly what it
    answers then: SQLSTATE 53100 ``disk_full`` on every write to queue.jobs.
    """
    await prepare(chaos_env.dsn, n)
    dsn = chaos_env.dsn
    figures: dict[str, float] = {}
    with FakeMailU() as node:
        cfg = configure(
            tmp_path / "engine.toml",
            chaos_env,
            [node],
            queue={"lease_s": 30.0},
            database={"command_timeout_s": 2.0},
        )
        daemon = start_daemon(cfg)

        await wait_for(dsn, relayed(n // 6), 60 + n / 50, daemon)
        locker = await connect_one(dsn)
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE queue.jobs IN ACCESS EXCLUSIVE MODE")
        try:
            figures |= await _stall("lock", daemon, node, stall_s)
        finally:
            await tx.rollback()
            await locker.close()

        await wait_for(dsn, relayed(n * 2 // 5), 60 + n / 50, daemon)
        with frozen(chaos_env):
            figures |= await _stall("sigstop", daemon, node, stall_s)

        await wait_for(dsn, relayed(n * 3 // 5), 60 + n / 50, daemon)
        admin = await connect_one(dsn)
        try:
            await admin.execute(_DISK_FULL)
            try:
                figures |= await _stall("disk_full", daemon, node, stall_s)
            finally:
                await admin.execute("DROP TRIGGER chaos_disk_full ON queue.jobs")
        finally:
            await admin.close()

        _, dups = await finish(chaos_env, daemon, node, n, timeout=60 + n / 50)
        assert dups <= 3 * IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"
    record("slow_postgres", jobs=n, lost=0, duplicates=dups, stall_s=stall_s, **figures)
