"""The daemon: wires every loop, handles signals, talks to systemd. The only module that knows
every package.

SIGTERM/SIGINT: stop taking new work, finish the jobs in flight, flush their outcomes, exit 0.
SIGHUP: reload the configuration (an invalid file is logged and the old one kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

import uvloop

from engine import config as config_mod
from engine import logs, metrics, sdnotify
from engine.config import Config
from engine.dispatch.seams import Shaper as ShaperSeam
from engine.dispatch.shaping import build_shaper
from engine.dispatch.signing import build_signer
from engine.dispatch.worker import Dispatcher
from engine.errors import EngineError
from engine.inbound.listener import InboundService
from engine.queue import feeder as feeder_mod
from engine.queue import reconciler
from engine.queue import streams as streams_mod
from engine.relay.pool import RelayPool
from engine.shaping.shaper import Shaper
from engine.store import pool as pool_mod
from engine.store.migrate import migrate

log = logging.getLogger("engine.daemon")


def consumer_name(cfg: Config) -> str:
    return cfg.queue.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


class Daemon:
    """One engine instance; many may run against the same PostgreSQL and Redis."""

    def __init__(self, cfg: Config, config_path: str | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.stop = asyncio.Event()  # stop taking work
        self.halt = asyncio.Event()  # stop the background loops (after the drain)
        self.consumer = consumer_name(cfg)
        self.extra_tasks: list[asyncio.Task[Any]] = []
        self.inbound: InboundService | None = None  # set once listening (tests read its port)

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_stop(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log.info("stopping: draining in-flight mail", extra={"signal": sig.name})
            sdnotify.notify("STOPPING=1\nSTATUS=draining in-flight mail")
        self.stop.set()

    def _on_reload(self) -> None:
        try:
            new = config_mod.load(self.config_path)
        except EngineError as exc:
            log.error(
                "reload refused: keeping the running configuration", extra={"error": str(exc)}
            )
            return
        logs.setup(new.log.level, new.log.format)
        self.cfg = new
        log.info("configuration reloaded (log level, shaping limits; restart for nodes/DSNs)")
        sdnotify.notify("RELOADING=0\nSTATUS=configuration reloaded")

    async def _build_shaper(self, client: Any, pool: Any) -> ShaperSeam | None:
        if not self.cfg.shaping.enabled:
            return None
        return await build_shaper(self.cfg, client, pool)

    async def run(self) -> int:
        cfg = self.cfg
        self._signals()
        await migrate(cfg.database.dsn)
        pool = await pool_mod.connect(cfg.database)
        client = streams_mod.connect(cfg.redis)
        streams = streams_mod.Streams(client, cfg.redis.prefix)
        try:
            await streams.ensure_groups()
            await streams.heartbeat(self.consumer, max(5.0, cfg.queue.reconcile_interval_s * 3))
        except Exception as exc:
            await pool.close()
            raise streams_mod.queue_error(exc, cfg.redis.url) from None
        signer = build_signer(cfg) if cfg.dkim.enabled else None
        relay = RelayPool(cfg.relay)
        await relay.start()
        shaper = await self._build_shaper(client, pool)
        dispatcher = Dispatcher(
            cfg=cfg,
            pool=pool,
            streams=streams,
            relay=relay,
            consumer=self.consumer,
            signer=signer,
            shaper=shaper,
        )
        inbound: InboundService | None = None
        self.inbound = None
        if cfg.inbound.enabled:
            inbound = InboundService(
                cfg.inbound, pool, shaper if isinstance(shaper, Shaper) else None
            )
            try:
                await inbound.start()
                self.inbound = inbound
            except OSError as exc:
                raise EngineError(
                    f"inbound listener cannot listen on {cfg.inbound.listen}: {exc.strerror}",
                    hint="set [inbound] listen to a free address, or enabled = false",
                ) from None
        feeder = feeder_mod.Feeder(pool, streams, cfg.queue, cfg.database.dsn)
        background = [
            asyncio.create_task(feeder.run(self.halt), name="feeder"),
            asyncio.create_task(
                reconciler.run(pool, streams, cfg.queue, self.consumer, self.halt),
                name="reconciler",
            ),
            asyncio.create_task(self._loop_lag(), name="loop-lag"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
            *self.extra_tasks,
        ]
        if signer is not None:
            background.append(asyncio.create_task(signer.refresh_loop(pool, self.halt)))
        if inbound is not None:
            background.append(asyncio.create_task(inbound.run(self.halt), name="inbound"))
        if isinstance(shaper, Shaper):
            background.append(asyncio.create_task(shaper.run(self.halt, pool), name="shaping"))
        log.info(
            "engine started",
            extra={"consumer": self.consumer, "nodes": [n.name for n in cfg.relay.nodes]},
        )
        sdnotify.notify(f"READY=1\nSTATUS=sending as {self.consumer}")
        try:
            await dispatcher.run(self.stop)
        finally:
            self.halt.set()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await feeder.close()
            if inbound is not None:
                await inbound.stop()
            await relay.close()
            if signer is not None:
                signer.close()
            await client.aclose()
            await pool.close()
        log.info("engine stopped cleanly")
        return 0

    async def _loop_lag(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.5)
            metrics.LOOP_LAG.set(max(0.0, time.perf_counter() - start - 0.5))

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def run_daemon(config_path: str | None) -> int:
    """``engine run``: load config once, log JSON lines, run on uvloop until SIGTERM."""
    cfg = config_mod.load(config_path)
    logs.setup(cfg.log.level, cfg.log.format)
    return uvloop.run(Daemon(cfg, config_path).run())
