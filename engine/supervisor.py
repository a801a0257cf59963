"""``engine run --workers N``: one event loop per core, supervised.

The supervisor starts N ``engine run`` children (each a full daemon with its own consumer name:
Redis consumer groups split the work, PostgreSQL leases keep each job in one worker), restarts a
child that dies, forwards SIGTERM (drain) and SIGHUP (reload), and is the one process systemd
talks to (READY/WATCHDOG/STOPPING). Only worker 0 runs the inbound listener and the admin
side-port, so no port is bound twice.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from engine import sdnotify

log = logging.getLogger("engine.supervisor")

WORKER_ENV = "ENGINE_WORKER_INDEX"
RESTART_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


def _spawn(index: int, config: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env[WORKER_ENV] = str(index)
    if index > 0:
        env["ENGINE_INBOUND__ENABLED"] = "false"
        env["ENGINE_ADMIN__ENABLED"] = "false"
    args = [sys.executable, "-m", "engine", "run"]
    if config:
        args += ["--config", config]
    return subprocess.Popen(args, env=env)


def supervise(workers: int, config: str | None) -> int:
    """Run ``workers`` daemons until SIGTERM; returns 0 when all drained cleanly."""
    children = {i: _spawn(i, config) for i in range(workers)}
    restarts = dict.fromkeys(children, 0)
    stopping = False

    def forward(sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            sdnotify.notify("STOPPING=1\nSTATUS=draining workers")
        for child in children.values():
            if child.poll() is None:
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    sdnotify.notify(f"READY=1\nSTATUS={workers} workers")
    interval = sdnotify.watchdog_interval_s()
    last_ping = 0.0
    while True:
        alive = 0
        for i, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive += 1
                continue
            if stopping:
                continue
            delay = RESTART_BACKOFF_S[min(restarts[i], len(RESTART_BACKOFF_S) - 1)]
            log.error("worker died; restarting", extra={"worker": i, "code": code, "in_s": delay})
            time.sleep(delay)
            restarts[i] += 1
            children[i] = _spawn(i, config)
            alive += 1
        if stopping and alive == 0:
            break
        now = time.monotonic()
        if interval and alive and now - last_ping >= interval:
            sdnotify.notify("WATCHDOG=1")
            last_ping = now
        time.sleep(0.2)
    codes = [c.returncode for c in children.values()]
    return 0 if all(c == 0 for c in codes) else 1
