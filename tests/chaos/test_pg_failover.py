"""PostgreSQL failover under a running daemon: the primary dies, its streaming replica is promoted.

The test starts a primary and a synchronous streaming replica from the Debian binaries (initdb,
pg_basebackup -R, pg_ctl promote) on free ports, and runs the daemon with one multi-host DSN
(``target_session_attrs=read-write``) naming both and the replica as ``replica_dsn``. Mid-run the
primary is killed (SIGKILL) and, a moment later, the replica promoted. Success: the daemon never
exits, every job ends relayed (none lost: synchronous replication means every commit the daemon
saw is on the replica), duplicates stay within the in-flight window, and sending resumes within
15 s of the promotion.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.servers import ThrowawayPostgres, ThrowawayRedis, find_binary
from tests.chaos.conftest import configure, poll, record
from tests.chaos.harness import DaemonProcess, prepare, wait_for
from tests.chaos.test_backing_services import finish
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos

IN_FLIGHT = 64
RESUME_WITHIN_S = 15.0


class StandbyPostgres(ThrowawayPostgres):
    """A streaming replica of ``primary``: ``pg_basebackup -R`` instead of initdb."""

    def __init__(self, primary: ThrowawayPostgres) -> None:
        super().__init__(fsync=False)
        self.primary = primary

    def init(self) -> None:
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                find_binary("pg_basebackup", "postgresql"),
                *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
                *("-D", str(self.data), "-R", "-X", "stream", "--no-sync"),
                # The standby's name in synchronous_standby_names
                *("-d", "application_name=standby"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
        )

    def promote(self) -> None:
        subprocess.run(
            [
                find_binary("pg_ctl", "postgresql"),
                "promote",
                "-w",
                "-t",
                "30",
                "-D",
                str(self.data),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
        )


@dataclass
class Pair:
    """Stands for the database and Redis in :func:`tests.chaos.conftest.configure`."""

    primary: ThrowawayPostgres
    standby: StandbyPostgres
    redis: ThrowawayRedis

    @property
    def dsn(self) -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    @property
    def url(self) -> str:
        return self.redis.url


@pytest.fixture
def pair() -> Iterator[Pair]:
    # Every commit waits for the standby: a primary killed at any moment loses nothing the
    # daemon was told was committed (docs/scaling.md, "High availability").
    sync = {"synchronous_commit": "on", "synchronous_standby_names": "standby"}
    primary = ThrowawayPostgres(settings=sync)
    standby = StandbyPostgres(primary)
    redis = ThrowawayRedis()
    try:
        primary.start()
        standby.start()
        redis.start()
        yield Pair(primary, standby, redis)
    finally:
        redis.stop()
        standby.cleanup()
        primary.cleanup()


async def test_primary_killed_replica_promoted(
    pair: Pair, tmp_path: Path, start_daemon: Callable[[Path], DaemonProcess]
) -> None:
    """Kill -9 the primary mid-run and promote the replica: 0 lost, sending resumes < 15 s."""
    n = 1200
    await prepare(pair.dsn, n)
    with FakeMailU() as node:
        cfg = configure(
            tmp_path / "engine.toml",
            pair,  # type: ignore[arg-type]
            [node],
            database={"replica_dsn": pair.standby.dsn, "replica_retry_s": 1.0},
        )
        daemon = start_daemon(cfg)
        await wait_for(pair.dsn, lambda c: c.get("relayed", 0) >= n // 3, 120, daemon)
        pair.primary.stop(hard=True)
        killed_at = node.count()
        await asyncio.sleep(2.0)  # the daemon finds no primary meanwhile
        assert daemon.alive(), daemon.log.read_text()[-3000:]
        sent_down = node.count() - killed_at
        assert sent_down <= IN_FLIGHT, f"{sent_down} sent with no primary (only in flight)"
        promoted_at = node.count()
        t0 = time.monotonic()
        pair.standby.promote()
        promote_s = time.monotonic() - t0
        resume_s = await poll(
            lambda: node.count() > promoted_at + 20, 60, "sending to resume after the promotion"
        )
        resume_s += promote_s
        _, dups = await finish(pair, daemon, node, n)  # type: ignore[arg-type]
        assert dups <= IN_FLIGHT, f"{dups} duplicates beyond the in-flight window"
        assert resume_s < RESUME_WITHIN_S, f"sending resumed {resume_s:.1f}s after the promotion"
    record(
        "postgres_failover",
        jobs=n,
        lost=0,
        duplicates=dups,
        sent_while_down=sent_down,
        resume_after_promotion_s=round(resume_s, 2),
    )
