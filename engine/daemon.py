"""The daemon: wires every loop, handles signals, talks to systemd. The only module that knows
every package.

SIGTERM/SIGINT: stop taking new work, finish the jobs in flight, flush their outcomes, exit 0.
SIGHUP: apply what the configuration may change live (engine/reload.py) and name in the log what
waits for a restart; an invalid file is logged and the running configuration kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any

import uvloop

from engine import config as config_mod
from engine import logs, looplag, olap_drain, periodic, retention, sdnotify
from engine import reload as reload_mod
from engine.admin import AdminContext, AdminServer, collector
from engine.compliance import service as compliance
from engine.compose import verp_keys
from engine.config import Config
from engine.dispatch.seams import Shaper as ShaperSeam
from engine.dispatch.shaping import ShapingEventSink, build_shaper
from engine.dispatch.signing import DkimSigner, build_signer
from engine.dispatch.worker import Dispatcher
from engine.dkim.keys import KeyRing
from engine.errors import EngineError
from engine.events.delivery import run_webhooks
from engine.events.stream import Publisher
from engine.inbound.listener import InboundService
from engine.inbound.trust import InboundTrust
from engine.queue import feeder as feeder_mod
from engine.queue import identity, reconciler, tally
from engine.queue import streams as streams_mod
from engine.relay.node_budget import RedisWarmupLedger
from engine.relay.pool import RelayPool
from engine.resolver import system_resolver
from engine.shaping.shaper import Shaper
from engine.store import domains as domain_store
from engine.store import pool as pool_mod
from engine.store.migrate import migrate_tiers

log = logging.getLogger("engine.daemon")


def consumer_name(cfg: Config) -> str:
    """The Redis consumer and PostgreSQL lease owner this process asks for: the same per host
    (or ``[queue] consumer_name``) and worker across restarts (engine/queue/identity.py)."""
    return identity.base_name(cfg.queue.consumer_name, os.environ.get("ENGINE_WORKER_INDEX"))


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
        self.admin_ctx: AdminContext | None = None
        self.admin_address: tuple[str, int] | None = None  # bound (host, port) of the side-port
        self.shaping_events = ShapingEventSink()
        self.shaper: Shaper | None = None  # set once built; a reload applies [shaping] to it
        self._ring: KeyRing | None = None  # our DKIM keys, which the inbound trust believes
        self.reconcile_now = asyncio.Event()  # the dispatcher saw Redis lose the queue
        self.tiers: pool_mod.Tiers | None = None  # the pool of each tier's server, once open

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_stop(self, sig: signal.Signals) -> None:
        if self.admin_ctx is not None:
            self.admin_ctx.mark_draining()
        if not self.stop.is_set():
            log.info("stopping: draining in-flight mail", extra={"signal": sig.name})
            sdnotify.notify("STOPPING=1\nSTATUS=draining in-flight mail")
        self.stop.set()

    def _on_reload(self) -> None:
        """SIGHUP: apply what can change live (:mod:`engine.reload`), name what cannot."""
        try:
            loaded = config_mod.load(self.config_path)
            change = reload_mod.plan(self.cfg, loaded)
            trust = None
            if self.inbound is not None and "inbound.fbl_reporters" in change.applied:
                trust = InboundTrust.from_config(change.config, self._ring)
            if self.shaper is not None:
                self.shaper.reload(change.config)  # an unreadable providers file refuses here
        except EngineError as exc:
            log.error(
                "reload refused: keeping the running configuration", extra={"error": str(exc)}
            )
            return
        logs.setup(loaded.log.level, loaded.log.format)
        if (loaded.inbound.verp_secret, loaded.inbound.verp_previous) != (
            self.cfg.inbound.verp_secret,
            self.cfg.inbound.verp_previous,
        ):
            # The dispatcher, listener and admin route keep the secrets they started with.
            log.warning("[inbound] VERP secrets changed: not applied until a restart")
        for key in change.refused:
            log.warning("reload: %s changed; not applied until a restart", key, extra={"key": key})
        if self.inbound is not None and trust is not None:
            self.inbound.trust = trust
        self.cfg = change.config
        if self.admin_ctx is not None:
            self.admin_ctx.cfg = change.config  # admin routes run compliance checks with it
        log.info("configuration reloaded", extra={"applied": change.applied})
        sdnotify.notify("STATUS=configuration reloaded")

    async def _build_shaper(self, client: Any, pool: Any) -> ShaperSeam | None:
        if not self.cfg.shaping.enabled:
            return None
        return await build_shaper(self.cfg, client, pool, on_event=self.shaping_events)

    async def _connect(self) -> tuple[Any, Any, streams_mod.Streams]:
        """PostgreSQL (migrated) and Redis, or a clear error naming the one that failed."""
        cfg = self.cfg
        # Every server of the tiers (content and olap may live apart: docs/scaling.md).
        # An olap server that is down does not stop the start: its counts wait in the outbox.
        await migrate_tiers(cfg.database, olap_may_wait=True)
        # The SQL enqueue path reads the [security] rules from the database.
        await domain_store.publish_rules(cfg.database.dsn, cfg.security)
        pool = await pool_mod.connect(cfg.database)
        client = streams_mod.connect(cfg.redis)
        streams = streams_mod.Streams(client, cfg.redis.prefix, streams_mod.shard_count(cfg.redis))
        ttl_s = max(5.0, cfg.queue.reconcile_interval_s * 3)
        try:
            await streams.ensure_groups()
            self.consumer = await identity.claim_name(streams, self.consumer, ttl_s)
            # A predecessor under this name (killed, crashed) left claims and read entries:
            # released now, not after its lease.
            await identity.take_over(pool, streams, self.consumer, self.consumer)
        except EngineError:
            await pool.close()
            raise
        except Exception as exc:
            await pool.close()
            raise streams_mod.queue_error(exc, cfg.redis) from None
        return pool, client, streams

    async def _start_inbound(
        self, tiers: pool_mod.Tiers, shaper: ShaperSeam | None, ring: KeyRing | None = None
    ) -> InboundService | None:
        cfg = self.cfg.inbound
        if not cfg.enabled:
            return None
        # Complaints are believed on our own DKIM signature: the signer's ring holds our keys.
        self._ring = ring
        trust = InboundTrust.from_config(self.cfg, ring)
        inbound = InboundService(
            cfg,
            tiers.main,
            shaper if isinstance(shaper, Shaper) else None,
            trust=trust,
            tiers=tiers,
        )
        try:
            await inbound.start()
        except OSError as exc:
            raise EngineError(
                f"inbound listener cannot listen on {cfg.listen}: {exc.strerror}",
                hint="set [inbound] listen to a free address, or enabled = false",
            ) from None
        self.inbound = inbound
        return inbound

    async def run(self) -> int:
        cfg = self.cfg
        # Before anything connects: every dispatched message is signed with this secret, even
        # with the inbound listener disabled.
        verp_keys.announce(cfg.inbound)
        self._signals()
        pool, client, streams = await self._connect()
        self.tiers = tiers = await pool_mod.connect_tiers(cfg.database, pool)
        signer = await build_signer(cfg) if cfg.dkim.enabled else None
        relay = RelayPool(cfg.relay, warmup_ledger=RedisWarmupLedger(client, cfg.redis.prefix))
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
            on_redis_lost=self.reconcile_now.set,
            tiers=tiers,
        )
        resolve = system_resolver(cfg.dns.timeout_s)  # webhook hosts (engine/events/ssrf.py)
        self.admin_ctx = admin_ctx = AdminContext(
            cfg=cfg,
            pool=pool,
            streams=streams,
            relay=relay,
            drain=lambda: self._on_stop(signal.SIGTERM),
            shaper=shaper if isinstance(shaper, Shaper) else None,
            paused_refresh_s=dispatcher.paused.ttl_s,
            resolve=resolve,
            reads=await pool_mod.connect_reads(cfg.database, pool),
            tiers=tiers,
        )
        admin = AdminServer(admin_ctx) if cfg.admin.enabled else None
        if admin is not None:
            # Before READY=1: a bad listen address or token fails the start.
            self.admin_address = await admin.start()
        inbound = await self._start_inbound(tiers, shaper, signer.ring if signer else None)
        feeder = feeder_mod.Feeder(pool, streams, cfg.queue, cfg.database.dsn)
        self.shaper = shaper if isinstance(shaper, Shaper) else None
        runner = periodic.Runner(
            self._tasks(pool, client, streams, feeder, signer, admin_ctx), self.halt
        )
        # Long-running work outside the runner: a ticker measuring the loop itself, the inbound
        # queue's consumer, and the webhook worker (its leadership terms are a periodic task
        # run inside its own HTTP session; the relay pool runs its health probes the same way).
        services = [looplag.monitor(), run_webhooks(pool, cfg, self.halt, resolve)]
        if inbound is not None:
            services.append(inbound.run(self.halt))
        runner.start()
        background = [asyncio.create_task(c) for c in services] + self.extra_tasks
        log.info(
            "engine started",
            extra={"consumer": self.consumer, "nodes": [n.name for n in cfg.relay.nodes]},
        )
        sdnotify.notify(f"READY=1\nSTATUS=sending as {self.consumer}")
        _tune_runtime()
        try:
            await dispatcher.run(self.stop)
        finally:
            if admin is not None:
                await admin.close()  # kept up during the drain, so /readyz says "draining"
            self.halt.set()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await runner.stop()  # then the final flushes (shaping feedback, state, events)
            await feeder.close()
            if inbound is not None:
                await inbound.stop()
            await relay.close()
            if signer is not None:
                await signer.aclose()
            await streams.close()
            await streams_mod.close(client)
            if admin_ctx.reads is not None:
                await admin_ctx.reads.close()
            await tiers.close()
            await pool.close()
        log.info("engine stopped cleanly")
        return 0

    def _tasks(
        self,
        pool: Any,
        client: Any,
        streams: streams_mod.Streams,
        feeder: feeder_mod.Feeder,
        signer: DkimSigner | None,
        admin_ctx: AdminContext,
    ) -> list[periodic.Periodic]:
        """Every periodic task of the daemon (engine/periodic.py runs them)."""
        cfg = self.cfg
        tasks = [
            feeder.task(),
            reconciler.task(pool, streams, cfg.queue, self.consumer, self.reconcile_now),
            tally.task(pool),
            Publisher(pool, client, cfg.redis.prefix, cfg.events).task(),
            collector.task(admin_ctx),
            # The compliance and retention settings are live: read at every round.
            periodic.Periodic("compliance", lambda: self._compliance(pool), self._poll_s),
            periodic.Periodic(
                "retention", lambda: self._retention(pool), DAY_S, retry_s=self._poll_s
            ),
        ]
        watchdog_s = sdnotify.watchdog_interval_s()
        if watchdog_s is not None:
            tasks.append(periodic.Periodic("watchdog", _watchdog_ping, watchdog_s))
        if signer is not None:
            tasks.append(signer.refresh_task(pool))
        if self.tiers is not None and self.tiers.olap_apart:
            # The counts written to the outbox while olap lives on another server.
            tasks.append(olap_drain.Drainer(pool, self.tiers.olap).task())
        if self.shaper is not None:
            tasks += self.shaper.tasks(pool)
            tasks.append(self.shaping_events.task(pool))
        return tasks

    def _poll_s(self) -> float:
        return self.cfg.compliance.poll_s

    async def _compliance(self, pool: Any) -> None:
        """Sender compliance: new domains, stale verdicts (``[compliance] auto_check``)."""
        if self.cfg.compliance.auto_check:
            await compliance.housekeep(pool, self.cfg, shaper=self.shaper)

    async def _retention(self, pool: Any) -> None:
        """Delete what the ``[retention]`` periods let go (daily, from start-up)."""
        await retention.run(pool, self.cfg, tiers=self.tiers)


#: Retention runs at start-up and then once a day.
DAY_S = 86400.0


async def _watchdog_ping() -> None:
    sdnotify.notify("WATCHDOG=1")


#: How long the loop thread may keep the GIL while a signer thread waits for it (CPython's
#: default is 5 ms). A signer re-takes the GIL after every RSA operation (OpenSSL runs without
#: it); with the loop thread busy it would wait up to the whole interval each time and jobs would
#: queue for their signatures. The measurements behind 0.5 ms are in bench/README.md.
SWITCH_INTERVAL_S = 0.0005


def _tune_runtime() -> None:
    """GIL hand-over and garbage collection tuned for the running daemon.

    Fewer, cheaper collections once started (the collector is a visible share of the loop
    thread under load): everything built at start (config, modules, pools, caches) is frozen
    out of the collector's view, and the young generation collects every 20,000 allocations
    instead of 700: the engine makes few reference cycles, so this mostly saves re-scanning
    long-lived objects. See :data:`SWITCH_INTERVAL_S` for the GIL.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_daemon(config_path: str | None) -> int:
    """``engine run``: load config once, log JSON lines, run on uvloop until SIGTERM."""
    cfg = config_mod.load(config_path)
    logs.setup(cfg.log.level, cfg.log.format)
    return uvloop.run(Daemon(cfg, config_path).run())
