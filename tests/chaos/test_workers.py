"""``engine run --workers 2``: both workers send, a killed worker is restarted, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import sdnotify
from engine.servers import ThrowawayPostgres, ThrowawayRedis
from tests.chaos.harness import prepare, wait_for, write_config
from tests.fakes.mailu import FakeMailU

pytestmark = pytest.mark.chaos


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


async def test_two_workers_supervised(tmp_path: Path) -> None:
    n = 3000
    with ThrowawayPostgres() as pg, ThrowawayRedis() as redis, FakeMailU() as node:
        await prepare(pg.dsn, n)
        cfg = write_config(tmp_path / "engine.toml", pg, redis, [node])
        log = open(tmp_path / "sup.log", "wb")  # noqa: SIM115
        systemd = sdnotify.Listener()
        sup = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--workers", "2", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": systemd.path},
        )
        try:
            deadline = time.monotonic() + 60
            while sup.pid not in systemd.ready and time.monotonic() < deadline:
                systemd.wait(0.1)
                systemd.poll()
            # READY=1 from the supervisor once both workers said it (theirs go to it, not here).
            assert sup.pid in systemd.ready
            first = _children(sup.pid)
            assert len(first) == 2
            await wait_for(pg.dsn, lambda c: c.get("relayed", 0) >= n // 3, 120)
            os.kill(first[0], signal.SIGKILL)  # the supervisor must bring it back
            final = await wait_for(pg.dsn, lambda c: c.get("relayed", 0) >= n, 180)
            assert final.get("sending", 0) == 0
            again = _children(sup.pid)
            assert len(again) == 2 and first[0] not in again
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(60) == 0
        finally:
            if sup.poll() is None:
                sup.kill()
            log.close()
            systemd.close()
        counts = node.message_id_counts()
        assert len(counts) == n
        assert sum(v - 1 for v in counts.values()) <= 64  # one kill: one in-flight window
        text = (tmp_path / "sup.log").read_text()
        assert "worker died; restarting" in text
