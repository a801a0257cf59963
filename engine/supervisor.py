"""``engine run --workers N``: one event loop per core, supervised.

The supervisor starts N ``engine run`` children (each a full daemon with its own consumer name:
Redis consumer groups split the work, PostgreSQL leases keep each job in one worker), restarts a
child that dies, forwards SIGTERM (drain) and SIGHUP (reload), and is the one process systemd
talks to (READY/WATCHDOG/STOPPING). Only worker 0 runs the inbound listener and the admin
side-port, so no port is bound twice; its ``/metrics`` serves every worker's metrics, which the
workers write to a directory of this run's own (``PROMETHEUS_MULTIPROC_DIR``, engine/metrics.py):
created empty at start, a dead worker's live gauges dropped from it, removed at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from engine import sdnotify
from engine.metrics import MULTIPROC_ENV, forget_worker

log = logging.getLogger("engine.supervisor")

WORKER_ENV = "ENGINE_WORKER_INDEX"
RESTART_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


def _spawn(
    index: int, config: str | None, notify_socket: str, metrics_dir: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
    env[MULTIPROC_ENV] = metrics_dir
    # A worker's READY=1 comes to the supervisor, which tells systemd once every worker is up.
    env["NOTIFY_SOCKET"] = notify_socket
    env[WORKER_ENV] = str(index)
    if index > 0:
        env["ENGINE_INBOUND__ENABLED"] = "false"
        env["ENGINE_ADMIN__ENABLED"] = "false"
    args = [sys.executable, "-m", "engine", "run"]
    if config:
        args += ["--config", config]
    return subprocess.Popen(args, env=env)


def _announce(children: dict[int, subprocess.Popen[bytes]], listener: sdnotify.Listener) -> bool:
    """READY=1 to systemd once every worker has said READY=1 (keys loaded, relay connected),
    not at fork time: systemd, and units ordered after this one, would count on workers still
    starting up. True once said."""
    if not all(c.pid in listener.ready for c in children.values()):
        return False
    sdnotify.notify(f"READY=1\nSTATUS={len(children)} workers")
    return True


def supervise(workers: int, config: str | None) -> int:
    """Run ``workers`` daemons until SIGTERM; returns 0 when all drained cleanly."""
    listener = sdnotify.Listener()
    # Fresh per run (PrivateTmp under systemd): files of an earlier run would be summed in.
    metrics_dir = tempfile.mkdtemp(prefix="engine-metrics-")
    try:
        return _supervise(workers, config, listener, metrics_dir)
    finally:
        listener.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    workers: int, config: str | None, listener: sdnotify.Listener, metrics_dir: str
) -> int:
    children = {i: _spawn(i, config, listener.path, metrics_dir) for i in range(workers)}
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
    announced = False
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
            forget_worker(metrics_dir, child.pid)
            delay = RESTART_BACKOFF_S[min(restarts[i], len(RESTART_BACKOFF_S) - 1)]
            log.error("worker died; restarting", extra={"worker": i, "code": code, "in_s": delay})
            time.sleep(delay)
            restarts[i] += 1
            children[i] = _spawn(i, config, listener.path, metrics_dir)
            alive += 1
        if stopping and alive == 0:
            break
        # Drained every round, READY said or not: once the socket's queue is full, a worker's
        # next notify (READY after a restart, STOPPING) would block.
        listener.poll()
        announced = announced or _announce(children, listener)
        now = time.monotonic()
        if interval and alive and now - last_ping >= interval:
            sdnotify.notify("WATCHDOG=1")
            last_ping = now
        listener.wait(0.2)
    codes = [c.returncode for c in children.values()]
    return 0 if all(c == 0 for c in codes) else 1
