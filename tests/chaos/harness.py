"""Chaos harness: throwaway PostgreSQL/Redis, fake MailU nodes, and the daemon as a subprocess."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from engine import sdnotify
from engine.config import DatabaseConfig
from engine.enqueue import enqueue
from engine.servers import ThrowawayPostgres, ThrowawayRedis
from engine.store import tenants
from engine.store.migrate import migrate
from engine.store.pool import connect, connect_one
from tests.fakes.mailu import FakeMailU


def write_config(
    path: Path,
    pg: ThrowawayPostgres,
    redis: ThrowawayRedis,
    nodes: Sequence[FakeMailU],
    **queue: object,
) -> Path:
    q = {
        "max_in_flight": 64,
        "batch_size": 64,
        "lease_s": 10.0,
        "retry_base_s": 0.2,
        "retry_max_s": 1.0,
        "feeder_interval_s": 0.2,
        "reconcile_interval_s": 1.0,
        "reconcile_after_s": 5.0,
        **queue,
    }
    lines = [
        "[database]",
        f'dsn = "{pg.dsn}"',
        "pool_min = 1",
        "pool_max = 6",
        "[redis]",
        f'url = "{redis.url}"',
        "[queue]",
        *(f"{k} = {orjson.dumps(v).decode()}" for k, v in q.items()),
        "[shaping]",
        "enabled = false",
        "[dkim]",
        "enabled = false",
        "[inbound]",
        'listen = "127.0.0.1:0"',
        f'verp_secret = "{secrets.token_hex(32)}"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[log]",
        'level = "warning"',
        "[relay]",
        "connect_timeout_s = 2.0",
        "command_timeout_s = 5.0",
        "breaker_cooldown_s = 1.0",
    ]
    for i, n in enumerate(nodes):
        lines += [
            "[[relay.nodes]]",
            f'name = "n{i}"',
            f'host = "{n.host}"',
            f"port = {n.port}",
            'tls = "none"',
            "max_connections = 4",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def job_line(i: int) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"k{i}",
            "from": "news@acme.example",
            "to": f"user{i}@example.com",
            "subject": "chaos",
            "text": "body",
        }
    )


async def prepare(dsn: str, n: int) -> None:
    await migrate(dsn)
    pool = await connect(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    try:
        await tenants.add(pool, "acme")
        res = await enqueue(
            pool, [job_line(i) for i in range(n)], max_message_bytes=10**6, max_age_s=3600
        )
        assert all(r.error is None for r in res)
    finally:
        await pool.close()


async def counts(dsn: str) -> dict[str, int]:
    conn = await connect_one(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) n FROM queue.jobs GROUP BY state")
    finally:
        await conn.close()
    out: dict[str, int] = {}
    out.update({r["state"]: r["n"] for r in rows})
    return out


class DaemonProcess:
    """``python -m engine run --config F`` as a child process."""

    def __init__(self, config: Path, notify: sdnotify.Listener | None = None) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.with_suffix(".log")
        # Where the daemon sends READY=1 (systemd's protocol), for wait_ready.
        self.notify = notify

    def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ENGINE_CONFIG", None)
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.path
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> None:
        """SIGKILL the daemon if it still runs, and wait for it (teardown after a failure)."""
        if self.alive():
            self.kill9()
        elif self.proc is not None:
            self.proc.wait(10)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the daemon said READY=1 (needs ``notify``)."""
        assert self.proc is not None and self.notify is not None
        deadline = time.monotonic() + timeout
        while self.proc.pid not in self.notify.ready:
            assert self.alive(), self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no READY=1 within {timeout:.0f}s"
            self.notify.wait(0.1)
            self.notify.poll()


async def wait_for(
    dsn: str, pred: object, timeout: float, daemon: DaemonProcess | None = None
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    c: dict[str, int] = {}
    while time.monotonic() < deadline:
        c = await counts(dsn)
        if pred(c):  # type: ignore[operator]
            return c
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon died: {daemon.log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; counts={c}")
