"""The webhook delivery worker: batched, signed POSTs with retries and dead letters.

Its own task, its own HTTP connections and its own PostgreSQL session for leadership, so the
send path never waits on a tenant's slow endpoint. Each round (every ``webhook_flush_ms``) it
scans new events for the tenants that have some, and for each such endpoint (one batch in flight
per endpoint, ``webhook_concurrency`` endpoints at once) reads up to ``webhook_batch`` events
after the endpoint's cursor, POSTs the ones its filter wants and, on a 2xx, advances the cursor
in ``oltp.webhook_endpoints`` — so a restart resumes where delivery stopped (at-least-once).

A failed POST (network error, timeout, non-2xx, redirect) is retried with exponential backoff
and jitter; a batch whose oldest event is older than ``webhook_max_age_s`` when it fails again
goes to ``oltp.webhook_dead_letters`` and the cursor moves past it. One instance delivers at a
time (a session advisory lock on the worker's own connection); the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Sequence

import aiohttp
import asyncpg
import msgspec

from engine import metrics
from engine.backoff import backoff_s
from engine.config import Config, EventsConfig
from engine.errors import EngineError
from engine.events import store
from engine.events.model import Event
from engine.events.signature import HEADER, sign, standard_headers
from engine.events.ssrf import (
    Policy,
    RefusedAddress,
    Resolve,
    VettingResolver,
    check_url,
    policy_of,
)
from engine.events.store import (
    Position,
    head,
    read_tenant_after,
    tenants_after,
    try_session_lock,
)
from engine.events.webhooks import DeliveryTarget, load_targets
from engine.periodic import Periodic, run_until
from engine.store.pool import connect_one, ping

log = logging.getLogger("engine.webhooks")

_LOCK_KEY = 0x7077686B  # "pwhk": the webhook worker's advisory lock id
_STANDBY_S = 2.0  # how often a standby instance tries to take over
_SCAN_LIMIT = 10_000  # events scanned per round to find tenants with news
_ERROR_TEXT = 200  # characters of an engine-side failure kept in last_error
USER_AGENT = "penguinmails-engine-webhooks/1"


class WebhookPayload(msgspec.Struct, frozen=True):
    """The POST body: ``events`` in commit order; ``attempt`` counts from 1 per batch."""

    endpoint_id: int
    attempt: int
    events: list[Event]


class PostResult(msgspec.Struct, frozen=True):
    ok: bool
    status: int | None = None
    error: str | None = None


class WebhookWorker:
    """Delivers ``oltp.events`` to the active endpoints of ``oltp.webhook_endpoints``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        cfg: EventsConfig,
        dsn: str,
        *,
        resolve: Resolve,
        refresh_s: float = 2.0,
        rand: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.cfg = cfg
        self.dsn = dsn
        self.policy: Policy = policy_of(cfg)
        self.resolve = resolve
        self.refresh_s = refresh_s
        self.rand = rand or random.Random()
        self.targets: dict[int, DeliveryTarget] = {}
        self._dirty: set[int] = set()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.leading = asyncio.Event()  # set while this instance holds the lock (tests, status)

    # -- leadership ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; stands by while another instance holds the lock."""
        timeout = aiohttp.ClientTimeout(
            total=self.cfg.webhook_timeout_s, connect=min(5.0, self.cfg.webhook_timeout_s)
        )
        # The vetting resolver is the only way a name becomes an address, and the connector
        # caches nothing, so each new connection goes to addresses vetted for it.
        connector = aiohttp.TCPConnector(
            limit=max(1, self.cfg.webhook_concurrency),
            resolver=VettingResolver(self.policy, self.resolve),
            use_dns_cache=False,
        )
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, trust_env=False
        ) as session:
            self._session = session
            # One call is one leadership term (or a failed try at one); a failure is logged
            # and retried, since a dead worker would stop webhooks silently.
            await run_until(Periodic("webhooks", lambda: self._term(stop), _STANDBY_S), stop)

    async def _term(self, stop: asyncio.Event) -> None:
        """One leadership term: take the lock on a dedicated connection, lead, let go."""
        conn = await connect_one(self.dsn)
        try:
            if not await try_session_lock(conn, _LOCK_KEY):
                return
            self.leading.set()
            log.info("webhook worker leading")
            try:
                await self._lead(conn, stop)
            finally:
                self.leading.clear()
                await self._settle()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()  # closing the session releases the lock

    async def _settle(self) -> None:
        """Let POSTs in flight finish (their cursor writes are what makes them count)."""
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.cfg.webhook_timeout_s + 1)
            for t in pending:
                t.cancel()
        self._running.clear()

    async def _lead(self, lock_conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        # The scan position starts at the newest settled event; every endpoint starts dirty so
        # whatever lies between its own cursor and that position is read by its first batch.
        scan: Position | None = await head(self.pool)
        await self._refresh(mark_all=True)
        refreshed = time.monotonic()
        flush_s = self.cfg.webhook_flush_ms / 1000
        while not stop.is_set():
            if time.monotonic() - refreshed >= self.refresh_s:
                await ping(lock_conn)  # lost the session: the lock is gone too
                await self._refresh()
                refreshed = time.monotonic()
            if not self.targets:
                # No endpoint: nothing to scan for (the scan reads every event of the send
                # path). An endpoint added later starts dirty and reads from its own cursor;
                # the scan restarts from the newest event, taken before its first batch.
                scan = None
            else:
                if scan is None:
                    scan = await head(self.pool)
                news, last = await tenants_after(self.pool, scan, _SCAN_LIMIT)
                if last is not None:
                    scan = last
                    self._dirty.update(t.id for t in self.targets.values() if t.tenant_id in news)
            self._start_due()
            await _sleep_unless(stop, flush_s)  # events arriving meanwhile make one batch

    async def _refresh(self, *, mark_all: bool = False) -> None:
        """Reload the endpoint list (other instances' admin changes); keep busy ones as they are."""
        fresh = {t.id: t for t in await load_targets(self.pool)}
        for ep_id, target in fresh.items():
            if ep_id in self._running:
                continue
            if ep_id not in self.targets or mark_all:
                self._dirty.add(ep_id)
            self.targets[ep_id] = target
        for ep_id in set(self.targets) - set(fresh):
            del self.targets[ep_id]
            self._dirty.discard(ep_id)

    def _start_due(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self._running = {k: t for k, t in self._running.items() if not t.done()}
        for ep_id in sorted(self._dirty):
            if len(self._running) >= self.cfg.webhook_concurrency:
                return
            target = self.targets.get(ep_id)
            if target is None or ep_id in self._running:
                continue
            if target.next_attempt_at is not None and target.next_attempt_at > now:
                continue
            self._running[ep_id] = asyncio.create_task(self._drain(target))

    # -- one endpoint ---------------------------------------------------------------------------

    async def _drain(self, target: DeliveryTarget) -> None:
        """Deliver batches to one endpoint until it is caught up or a POST fails."""
        try:
            while target.id in self.targets:
                self._dirty.discard(target.id)  # news arriving from now on re-marks it
                batch = await read_tenant_after(
                    self.pool, target.tenant_id, target.cursor, self.cfg.webhook_batch
                )
                if not batch:
                    return
                full = len(batch) == self.cfg.webhook_batch
                last = batch[-1][0]
                events = [e for _, e in batch if not target.kinds or e.kind in target.kinds]
                if events and not await self._deliver(target, events, last):
                    self._dirty.add(target.id)  # retried once next_attempt_at is reached
                    return
                if not events:
                    await _save_cursor(self.pool, target, last)
                if not full:
                    return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self._dirty.add(target.id)
            log.warning(
                "webhook delivery: PostgreSQL failed",
                extra={"endpoint": target.id, "error": str(exc)},
            )

    async def _deliver(self, target: DeliveryTarget, events: list[Event], last: Position) -> bool:
        """POST one batch; on failure record the retry or the dead letter. True: cursor moved."""
        attempt = target.attempts + 1
        result = await self.post(target, events, attempt)
        if result.ok:
            metrics.WEBHOOK_DELIVERIES.labels("ok").inc()
            metrics.WEBHOOK_EVENTS.labels("ok").inc(len(events))
            await _succeeded(self.pool, target, last, len(events), result.status)
            return True
        now = dt.datetime.now(dt.UTC)
        oldest = min((e.at for e in events if e.at is not None), default=now)
        log.warning(
            "webhook delivery failed",
            extra={
                "tenant": target.tenant_id,
                "endpoint": target.id,
                "attempt": attempt,
                "status": result.status,
                "error": result.error,
                "events": len(events),
            },
        )
        if (now - oldest).total_seconds() >= self.cfg.webhook_max_age_s:
            metrics.WEBHOOK_DELIVERIES.labels("dead_letter").inc()
            metrics.WEBHOOK_EVENTS.labels("dead_letter").inc(len(events))
            await _dead_letter(self.pool, target, events, last, attempt, result)
            log.error(
                "webhook batch dead-lettered: failing past [events] webhook_max_age_s",
                extra={"tenant": target.tenant_id, "endpoint": target.id, "events": len(events)},
            )
            return True
        delay = backoff_s(
            attempt,
            base_s=self.cfg.webhook_retry_base_s,
            max_s=self.cfg.webhook_retry_max_s,
            jitter=0.25,
            rand=self.rand,
        )
        await _failed(self.pool, target, attempt, now + dt.timedelta(seconds=delay), result)
        return False

    async def post(self, target: DeliveryTarget, events: list[Event], attempt: int) -> PostResult:
        """One signed POST of ``events`` to ``target`` (no retry here).

        What is recorded of a failure is engine-side text or ``HTTP <status>``: nothing of the
        receiver's answer beyond its status code, so ``GET /v1/webhooks`` cannot be used to read
        what an (internal) URL returns.
        """
        try:
            check_url(target.url, self.policy)  # the rules may have changed since creation
        except EngineError as exc:
            metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
            return PostResult(False, None, f"refused: {exc.message}"[:_ERROR_TEXT])
        assert self._session is not None, "post() outside run()"
        body = msgspec.json.encode(WebhookPayload(target.id, attempt, events))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **standard_headers(target.secret, message_id(target.id, events), body),
            HEADER: sign(target.secret, body),  # deprecated; docs/events.md
        }
        started = time.perf_counter()
        try:
            async with self._session.post(
                target.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
        except RefusedAddress as exc:
            metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
            return PostResult(False, None, f"refused: {exc}"[:_ERROR_TEXT])
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
                return PostResult(False, None, f"refused: {exc.os_error}"[:_ERROR_TEXT])
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            return PostResult(False, None, "connection failed")
        except EngineError as exc:  # the DNS seam failed
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            return PostResult(False, None, exc.message[:_ERROR_TEXT])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            return PostResult(False, None, _failure_name(exc))
        finally:
            metrics.WEBHOOK_LATENCY.observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return PostResult(True, status)
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        if 300 <= status < 400:
            return PostResult(False, status, f"HTTP {status} (redirects are not followed)")
        return PostResult(False, status, f"HTTP {status}")


def message_id(endpoint_id: int, events: Sequence[Event]) -> str:
    """The ``webhook-id`` of a batch: the same on every retry of the same events, so a receiver
    can drop a redelivery it already processed (a retry that picked up more events is a new
    message)."""
    first, last = events[0].id, events[-1].id
    return f"msg_{endpoint_id}_{first}_{last}"


def _failure_name(exc: BaseException) -> str:
    """A failure as a fixed phrase: exception text can carry what the receiver sent."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "malformed HTTP response"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return f"request failed ({type(exc).__name__})"


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# -- endpoint state (one UPDATE per batch) ------------------------------------------------------


async def _save_cursor(pool: asyncpg.Pool, target: DeliveryTarget, last: Position) -> None:
    await store.save_endpoint_cursor(pool, target.tenant_id, target.id, last)
    target.cursor = last


async def _succeeded(
    pool: asyncpg.Pool, target: DeliveryTarget, last: Position, n: int, status: int | None
) -> None:
    await store.endpoint_succeeded(pool, target.tenant_id, target.id, last, n, status)
    target.cursor, target.attempts = last, 0
    target.failing_since = target.next_attempt_at = None


async def _failed(
    pool: asyncpg.Pool,
    target: DeliveryTarget,
    attempt: int,
    next_at: dt.datetime,
    result: PostResult,
) -> None:
    await store.endpoint_failed(
        pool, target.tenant_id, target.id, attempt, next_at, result.status, result.error
    )
    target.attempts, target.next_attempt_at = attempt, next_at
    target.failing_since = target.failing_since or dt.datetime.now(dt.UTC)


async def _dead_letter(
    pool: asyncpg.Pool,
    target: DeliveryTarget,
    events: Sequence[Event],
    last: Position,
    attempt: int,
    result: PostResult,
) -> None:
    await store.dead_letter(
        pool,
        target.tenant_id,
        target.id,
        [e.id for e in events],
        attempt,
        target.failing_since,
        last,
        result.status,
        result.error,
    )
    target.cursor, target.attempts = last, 0
    target.failing_since = target.next_attempt_at = None


async def run_webhooks(
    pool: asyncpg.Pool, cfg: Config, stop: asyncio.Event, resolve: Resolve
) -> None:
    """The daemon's background task: deliver webhooks until ``stop``."""
    await WebhookWorker(pool, cfg.events, cfg.database.dsn, resolve=resolve).run(stop)
