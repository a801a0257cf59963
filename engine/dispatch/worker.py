"""The dispatcher: reads stream entries, claims jobs, and sends each through the pipeline.

One batch costs a fixed number of round trips (claim, content, suppressions, shaping), then every
job runs as its own task bounded by ``max_in_flight``: compose (body cached per content hash),
sign (signer pool), relay (pooled connections). Outcomes go to the batched :class:`OutcomeWriter`.
Any unexpected error defers the job (never loses it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import asyncpg
import msgspec

from engine import metrics
from engine.backoff import backoff_s
from engine.compose import message_id as message_ids
from engine.compose import unsubscribe, verp_keys
from engine.compose.mime import ComposedBody, build_body, effective_message_id, render
from engine.compose.unsubscribe import feedback_id
from engine.config import Config
from engine.dispatch import inflight, templated
from engine.dispatch.outcomes import OutcomeWriter
from engine.dispatch.seams import Relay, Shaper, Signer
from engine.dispatch.templated import TemplatedBodies
from engine.dkim.sign import dkim_selectors
from engine.errors import ComposeError, DkimError, EngineError
from engine.model import Content, JobState, OutcomeKind
from engine.queue.pace import InFlightWindow
from engine.queue.streams import Entry, Streams
from engine.relay.dsn import DsnRequest, sampled
from engine.senders.service import PausedSenders, hold_s
from engine.shaping.model import ShapeDecision, ShapeRequest
from engine.shaping.signals import from_outcome
from engine.store import content as content_store
from engine.store import jobs as job_store
from engine.store import quota, suppressions
from engine.store.pool import Tiers

log = logging.getLogger("engine.dispatch")

_ALLOW = ShapeDecision(allowed=True)
HOLD_DKIM_S = 600.0
PROVIDER_BUSY = "held by shaping limit connections"
#: Consecutive failed rounds that retry the same entries; past this (a fault that is not an
#: outage) they are left pending for XAUTOCLAIM and the dispatcher reads new ones.
RETRY_ROUNDS = 120


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class BodyCache:
    """Composed bodies per (tenant, content hash), least recently used first out, up to
    ``max_bytes`` of them: a 50k campaign builds its MIME once.

    Bounded by bytes, not entries: the feeder deals jobs round robin over tenants, so with more
    campaigns in flight than a fixed count of entries every job would miss and rebuild its body
    on the event loop, while bodies range from 1 KB to megabytes.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, bytes], ComposedBody] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[str, bytes]) -> ComposedBody | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: tuple[str, bytes], content: Content) -> ComposedBody:
        body = build_body(content)
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._items[key] = body
        self.bytes += body.size
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= dropped.size
        return body


class Dispatcher:
    """Consumes the streams and drives each claimed job to an outcome."""

    def __init__(
        self,
        *,
        cfg: Config,
        pool: asyncpg.Pool,
        streams: Streams,
        relay: Relay,
        consumer: str,
        signer: Signer | None = None,
        shaper: Shaper | None = None,
        on_redis_lost: Callable[[], None] | None = None,
        tiers: Tiers | None = None,
    ) -> None:
        self.cfg = cfg
        self.q = cfg.queue
        self.pool = pool
        self.streams = streams
        self.relay = relay
        self.consumer = consumer
        self.signer = signer
        self.shaper = shaper
        self.bodies = BodyCache(self.q.body_cache_mb * 1024 * 1024)
        tiers = tiers or Tiers(pool)
        self.content = tiers.content  # content and campaign templates (maybe another server)
        self.templated = TemplatedBodies(tiers.content)
        self.paused = PausedSenders(pool, olap=tiers.olap)
        self.slots = inflight.ProviderSlots(
            self._max_connections,
            wait_s=min(inflight.CAMPAIGN_WAIT_S, self.q.lease_s / 4),
            max_waiting=self.q.max_in_flight // 2,
        )
        self.in_flight = 0
        self.window = InFlightWindow(self.q)  # in flight: a time's worth, up to max_in_flight
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Recovery from a broken connection (docs/reliability.md "Recovery"): the jobs this
        # process is sending (claimed, outcome not yet committed), entries read in a round that
        # failed (retried first, instead of waiting in the pending list for XAUTOCLAIM), and
        # whether claims may have been lost track of (released by the next round).
        self.holding: set[int] = set()
        self._retry: list[Entry] = []
        self._resync = False
        self._failures = 0
        self._on_redis_lost = on_redis_lost
        self.writer = OutcomeWriter(
            pool,
            streams,
            consumer,
            flush_ms=self.q.outcome_flush_ms,
            batch=self.q.outcome_batch,
            on_done=self._done,
            on_written=self.holding.difference_update,
            olap_outbox=tiers.olap_apart,
        )

    def _max_connections(self, provider: str) -> int:
        """The provider's ``max_connections`` (0, no limit, when shaping is off)."""
        return 0 if self.shaper is None else self.shaper.provider_limits(provider).max_connections

    def _done(self, n: int) -> None:
        self.in_flight -= n
        metrics.IN_FLIGHT.set(self.in_flight)
        self.window.done(n)
        if self.in_flight < self.window.size():
            self._room.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; then finish every job in flight and flush outcomes."""
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self.writer.run(writer_stop))
        last_claim = 0.0
        try:
            while not stop.is_set():
                # In flight: a time's worth of this dispatcher's rate, up to max_in_flight. While
                # jobs queue at a provider's gate, more claims would mostly wait there or be held
                # and re-queued: half of it is then the dispatcher's bound.
                size = self.window.size()
                cap = size // 2 if self.slots.crowded() else size
                free = cap - self.in_flight
                if free < max(1, self.q.batch_size // 4):
                    self._room.clear()
                    await _wait_any(stop, self._room, timeout=1.0)
                    continue
                entries: list[Entry] = []
                try:
                    if self._resync:
                        await self._release_lost_claims()
                    entries, self._retry = self._retry, []
                    now = time.monotonic()
                    if not entries and now - last_claim > max(1.0, self.q.lease_s / 4):
                        last_claim = now
                        entries = await self.streams.autoclaim(
                            self.consumer, int(self.q.lease_s * 1000), min(free, 100)
                        )
                    if not entries:
                        scale = max(1, min(free, self.q.batch_size) // sum(self.q.weights))
                        entries = await self.streams.read(
                            self.consumer, self.q.weights, scale, block_ms=250
                        )
                    if entries:
                        await self._dispatch(entries)
                    self._failures = 0
                except Exception as exc:  # outages and the unexpected: retry, never exit
                    self._round_failed(exc, entries)
                    await asyncio.sleep(0.5)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            writer_stop.set()
            await writer

    def _round_failed(self, exc: Exception, entries: list[Entry]) -> None:
        """Remember what a failed round leaves behind, so the next one repairs it at once."""
        shown = str(exc) if isinstance(exc, OSError | asyncpg.PostgresError | EngineError) else None
        log.warning("dispatch round failed; retrying", extra={"error": shown or repr(exc)})
        self._failures = self._failures + 1 if entries else 0
        if entries and self._failures <= RETRY_ROUNDS:
            self._retry = entries[:]
        if entries:
            # The claim may have committed with its reply lost, or jobs claimed before a later
            # step failed: released by the next round instead of waiting out their lease.
            self._resync = True
        if "NOGROUP" in str(exc) and self._on_redis_lost is not None:
            self._on_redis_lost()  # Redis lost the group (flushed, restarted empty)

    async def _release_lost_claims(self) -> None:
        """Give back every job leased to this consumer that no task is sending."""
        n = await job_store.release_leases(self.pool, [self.consumer], keep=list(self.holding))
        self._resync = False
        if n:
            log.info("released claims lost in a failed round", extra={"n": n})

    async def _dispatch(self, entries: list[Entry]) -> None:
        by_job: dict[int, list[Entry]] = {}
        for e in entries:
            by_job.setdefault(e.job_id, []).append(e)
        ids = [j for j in by_job if j]
        claimed = await job_store.claim(
            self.pool,
            ids,
            owner=self.consumer,
            lease_s=self.q.lease_s,
            tenants=[by_job[j][0].tenant_id for j in ids],
        )
        claimed_ids = {j.id for j in claimed}
        stale = [e for j, es in by_job.items() if j not in claimed_ids for e in es]
        if stale:
            self.writer.ack_only(stale)
        if not claimed:
            return
        self.in_flight += len(claimed)
        metrics.IN_FLIGHT.set(self.in_flight)
        try:
            contents = await self._contents(claimed)
            rendered = await self.templated.prepare(claimed)
            blocked = await suppressions.check(
                self.pool, [(j.tenant_id, j.recipient) for j in claimed]
            )
            await self.paused.refresh()
            paused = [self.paused.is_paused(j.tenant_id, j.sender) for j in claimed]
            decisions = await self._shape(claimed, paused)
        except BaseException:
            # Nothing was attempted: the claims are released by the next round (the entries
            # are retried then, and claim the released jobs again).
            self.in_flight -= len(claimed)
            raise
        self.holding.update(claimed_ids)
        for job, held, decision in zip(claimed, paused, decisions, strict=True):
            body: templated.Body = (
                rendered.get(job.id)
                if job.template_version is not None
                else contents.get((job.tenant_id, job.content_sha256))
            )
            task = asyncio.create_task(
                self._handle(
                    job,
                    by_job[job.id],
                    body,
                    suppressed=(job.tenant_id, job.recipient.lower()) in blocked,
                    paused=held,
                    decision=decision,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _contents(
        self, claimed: Sequence[job_store.ClaimedJob]
    ) -> dict[tuple[str, bytes], ComposedBody]:
        out: dict[tuple[str, bytes], ComposedBody] = {}
        missing = []
        for j in claimed:
            if j.template_version is not None:
                continue  # its body is its own (TemplatedBodies)
            key = (j.tenant_id, j.content_sha256)
            item = self.bodies.get(key)
            if item is None:
                missing.append(key)
            else:
                out[key] = item
        if missing:
            loaded = await content_store.load(self.content, missing)
            for key, content in loaded.items():
                try:
                    out[key] = self.bodies.put(key, content)
                except ComposeError as exc:
                    log.warning("cannot compose content", extra={"error": str(exc)})
        return out

    async def _shape(
        self, claimed: Sequence[job_store.ClaimedJob], paused: Sequence[bool]
    ) -> list[ShapeDecision]:
        """Acquire shaping units for the jobs that may go; a paused sender's jobs use none."""
        decisions = [_ALLOW] * len(claimed)
        if self.shaper is None:
            return decisions
        going = [i for i, held in enumerate(paused) if not held]
        acquired = await self.shaper.acquire(
            [
                ShapeRequest(j.tenant_id, j.sender, recipient_domain=_domain(j.recipient))
                for j in (claimed[i] for i in going)
            ]
        )
        for i, decision in zip(going, acquired, strict=True):
            decisions[i] = decision
        return decisions

    def _compose(self, job: job_store.ClaimedJob, body: ComposedBody) -> tuple[str, bytes, str]:
        domain = _domain(job.sender)
        mid = effective_message_id(body, message_ids.make(job.id, job.tenant_id, domain))
        extra: list[tuple[str, str]] = []
        if job.campaign_id:
            extra.append(("Feedback-ID", feedback_id(job.campaign_id, job.tenant_id, domain)))
        # List-Unsubscribe normally comes from the content (build_body, composed once); bulk mail
        # without one gets the engine's own per-recipient one-click/mailto (Gmail/Yahoo rule).
        if job.campaign_id and "list-unsubscribe" not in body.header_names:
            extra.extend(unsubscribe.headers(job.id, self.cfg.inbound))
        message = render(body, to=job.recipient, message_id=mid, date=None, extra_headers=extra)
        envelope_from = verp_keys.encode(job.id, self.cfg.inbound)  # the current secret
        return mid, message, envelope_from

    def _dsn(self, job_id: int) -> DsnRequest | None:
        """The DSN request of a job (docs/relay.md "DSN"): the same on every retry."""
        relay = self.cfg.relay
        if not relay.dsn:
            return None
        return DsnRequest(
            envid=verp_keys.envid(job_id, self.cfg.inbound),
            success=sampled(job_id, relay.dsn_success_fraction),
        )

    async def _handle(
        self,
        job: job_store.ClaimedJob,
        entries: list[Entry],
        body: templated.Body,
        *,
        suppressed: bool,
        paused: bool,
        decision: ShapeDecision,
    ) -> None:
        stat_key = (job.tenant_id, job.sender, decision.provider)
        # Compose, sign and relay run within the provider's in-flight limit; a job that will
        # not be sent takes no slot.
        going = decision.allowed and not (suppressed or paused)
        slot = await self.slots.take(decision.provider if going else "")
        try:
            if slot is None:  # the provider's max_connections stay busy
                metrics.SHAPING_DELAYS.labels("connections").inc()
                row, attempted = self._held(job, inflight.HOLD_S, PROVIDER_BUSY), False
            else:
                row, attempted = await self._attempt(job, body, suppressed, paused, decision)
        except Exception as exc:  # the unexpected must defer the job, never lose it
            log.exception("job failed unexpectedly; deferring", extra={"job_id": job.id})
            row = self._deferred(job, None, None, f"internal error: {exc!r}", None)
            attempted = False
        finally:
            if slot is not None:
                slot.release()
        row = msgspec.structs.replace(row, tenant_id=job.tenant_id)  # the job's key for the write
        self.writer.add(
            row,
            entries,
            stat_key,
            attempted=attempted,
            recipient=job.recipient,
            campaign_id=job.campaign_id,
            created_at=job.created_at,
        )

    async def _attempt(
        self,
        job: job_store.ClaimedJob,
        pending: templated.Body,
        suppressed: bool,
        paused: bool,
        decision: ShapeDecision,
    ) -> tuple[job_store.OutcomeRow, bool]:
        if suppressed:
            metrics.MESSAGES.labels("suppressed", decision.provider, "").inc()
            return job_store.OutcomeRow(
                job.id,
                job.attempts,
                JobState.SUPPRESSED.value,
                reply="recipient is on the suppression list",
            ), False
        if paused:
            return self._held(job, hold_s(self.cfg), "sender is paused"), False
        if job.tenant_id in self.paused.over_quota:
            why = "tenant daily quota reached; held until the UTC day turns over"
            return self._held(job, quota.seconds_to_reset(), why), False
        if not decision.allowed:
            metrics.SHAPING_DELAYS.labels(decision.level or "unknown").inc()
            return self._held(
                job, decision.retry_after_s, f"held by shaping limit {decision.level}"
            ), False
        body = templated.resolve(pending)  # a templated job is rendered here, in its task
        if body is None or isinstance(body, ComposeError):  # ComposeError: a template's
            why = "content missing or cannot be composed" if body is None else f"template: {body}"
            return job_store.OutcomeRow(
                job.id, job.attempts, JobState.FAILED.value, reply=why
            ), False
        try:
            mid, message, envelope_from = self._compose(job, body)
        except ComposeError as exc:
            return job_store.OutcomeRow(
                job.id, job.attempts, JobState.FAILED.value, reply=f"compose: {exc}"
            ), False
        if self.signer is not None:
            try:
                message = await self.signer.sign(job.tenant_id, _domain(job.sender), message, body)
            except DkimError as exc:
                metrics.DKIM_FAILURES.inc()
                return self._held(job, HOLD_DKIM_S, f"dkim: {exc}"), False
        selector = dkim_selectors(message) if self.signer is not None else None
        provider = decision.provider
        started = time.perf_counter()
        result = await self.relay.send(
            envelope_from,
            job.recipient,
            message,
            affinity=_domain(job.sender),
            tenant=job.tenant_id,  # dedicated relay pools of enterprise tenants
            dsn=self._dsn(job.id),
        )
        node = result.node or ""
        took = time.perf_counter() - started
        metrics.labelled(metrics.RELAY_LATENCY, node).observe(took)
        metrics.labelled(metrics.MESSAGES, result.kind.value, provider, node).inc()
        if self.shaper is not None:
            self.shaper.record(
                from_outcome(
                    job.tenant_id,
                    job.sender,
                    provider,
                    result.kind,
                    throttled=result.throttled,
                    reply_code=result.reply_code,
                    enhanced_status=result.enhanced_status,
                )
            )
        if result.kind is OutcomeKind.DEFERRED:
            row = self._deferred(
                job, result.reply_code, result.enhanced_status, result.reply, result.node, mid
            )
            return msgspec.structs.replace(row, selector=selector, relay_ms=took * 1000), True
        if result.kind is OutcomeKind.RELAYED:
            metrics.END_TO_END.observe(time.time() - job.created_at.timestamp())
        state = JobState.RELAYED if result.kind is OutcomeKind.RELAYED else JobState.FAILED
        return job_store.OutcomeRow(
            job.id,
            job.attempts,
            state.value,
            code=result.reply_code,
            status=result.enhanced_status,
            reply=result.reply,
            node=result.node,
            message_id=mid,
            selector=selector,
            relay_ms=took * 1000,
        ), True

    def _deferred(
        self,
        job: job_store.ClaimedJob,
        code: int | None,
        status: str | None,
        reply: str | None,
        node: str | None,
        mid: str | None = None,
    ) -> job_store.OutcomeRow:
        delay = backoff_s(
            job.attempts,
            base_s=self.q.retry_base_s,
            max_s=self.q.retry_max_s,
            jitter=self.q.retry_jitter,
        )
        return job_store.OutcomeRow(
            job.id,
            job.attempts,
            JobState.DEFERRED.value,
            next_attempt_in_s=delay,
            code=code,
            status=status,
            reply=reply,
            node=node,
            message_id=mid,
        )

    def _held(self, job: job_store.ClaimedJob, delay_s: float, why: str) -> job_store.OutcomeRow:
        metrics.MESSAGES.labels("held", "", "").inc()
        state = JobState.QUEUED.value if job.attempts <= 1 else JobState.DEFERRED.value
        return job_store.OutcomeRow(
            job.id,
            job.attempts,
            state,
            next_attempt_in_s=max(0.05, delay_s),
            undo_attempt=True,
            reply=why,
        )

    async def drain(self) -> None:
        """Wait for jobs in flight and their outcomes."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.flush()


async def _wait_any(stop: asyncio.Event, other: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(other.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
