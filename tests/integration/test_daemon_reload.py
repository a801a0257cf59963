"""SIGHUP on a real daemon: a changed shaping limit is applied (the held mail goes), a changed
non-live key is named in the log and keeps its running value."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from engine import config as config_mod
from engine import logs
from engine.daemon import Daemon
from engine.shaping.explain import explain
from engine.shaping.model import Level
from engine.store import jobs as job_store
from tests.conftest import REDIS_URL, TEST_VERP_SECRET
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU
from tests.integration.test_daemon import _enqueue, job

SENDER = "news@acme.example"


def write_config(
    path: Path,
    dsn: str,
    prefix: str,
    node_port: int,
    *,
    sender_rate: float,
    batch: int,
    reporter: str | None = None,
) -> None:
    reporters = f'[[inbound.fbl_reporters]]\ndomain = "{reporter}"\n' if reporter else ""
    path.write_text(
        f'[database]\ndsn = "{dsn}"\npool_min = 1\npool_max = 5\n'
        f'[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
        f'[inbound]\nlisten = "127.0.0.1:0"\nverp_secret = "{TEST_VERP_SECRET}"\n'
        '[admin]\nlisten = "127.0.0.1:0"\n'
        "[dkim]\nenabled = false\n"
        f"[queue]\nbatch_size = {batch}\nfeeder_interval_s = 0.1\nretry_base_s = 0.2\n"
        "[shaping]\nwarmup = false\ndefault_rate_per_s = 100.0\nburst_s = 1.0\n"
        f"sender_rate_per_s = {sender_rate}\n"
        '[dns.overrides]\n"example.com" = ["mx.example.com"]\n'
        f'[[relay.nodes]]\nname = "n0"\nhost = "127.0.0.1"\nport = {node_port}\ntls = "none"\n'
        + reporters
    )


async def sender_limit(daemon: Daemon) -> float:
    assert daemon.shaper is not None
    verdict = await explain(daemon.shaper, "acme", SENDER, "bob@example.com")
    return next(s.limit for s in verdict.levels if s.level is Level.SENDER)


async def test_sighup_applies_a_shaping_limit_and_names_what_waits_for_a_restart(
    pool: asyncpg.Pool,
    clean_db: str,
    redis_prefix: str,
    mailu: FakeMailU,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "setup", lambda *_: None)  # keep pytest's log capture
    path = tmp_path / "engine.toml"
    write_config(path, clean_db, redis_prefix, mailu.port, sender_rate=0.2, batch=256)
    # One message every 5 s: 12 messages would take about a minute at the start-up limit.
    await _enqueue(pool, [job(i) for i in range(12)])
    daemon = Daemon(config_mod.load(path, env={}), str(path))
    running = asyncio.create_task(daemon.run())
    try:
        while daemon.shaper is None or (await job_store.counts(pool))["relayed"] < 1:
            assert not running.done(), running
            await asyncio.sleep(0.05)
        assert await sender_limit(daemon) == 0.2

        assert daemon.inbound is not None and daemon.inbound.trust.reporters == ()
        write_config(
            path,
            clean_db,
            redis_prefix,
            mailu.port,
            sender_rate=50.0,
            batch=64,
            reporter="fbl.example.net",
        )
        with caplog.at_level(logging.INFO):
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 5
            while daemon.cfg.shaping.sender_rate_per_s != 50.0:
                assert time.monotonic() < deadline, "SIGHUP not handled"
                await asyncio.sleep(0.02)
        assert await sender_limit(daemon) == 50.0  # the daemon's own limiter, not the file
        assert "queue.batch_size changed; not applied until a restart" in caplog.text
        assert daemon.cfg.queue.batch_size == 256  # the running value stays
        # Complaints from a newly configured feedback loop are believed without a restart.
        assert [r.domain for r in daemon.inbound.trust.reporters] == ["fbl.example.net"]

        deadline = time.monotonic() + 15
        while (await job_store.counts(pool))["relayed"] < 12:
            assert time.monotonic() < deadline, "the reloaded limit did not let the mail go"
            await asyncio.sleep(0.1)
    finally:
        daemon._on_stop(signal.SIGTERM)
        assert await asyncio.wait_for(running, 15) == 0
