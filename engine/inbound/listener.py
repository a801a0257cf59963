"""The inbound SMTP listener (aiosmtpd) for bounces (VERP) and feedback-loop reports (FBL).

Not an open relay: RCPT is accepted only for a VERP address whose HMAC checks out or a configured
FBL/abuse address; anything else is refused at RCPT. The raw message is stored (compressed, off
the event loop, in the content tier) before the 250 is sent, queued in a bounded intake (full:
421, the sender retries) and parsed in separate processes under a hard CPU budget per message
(:mod:`engine.inbound.workers`); a message over budget is quarantined, never parsed again until
``engine bounce requeue``. Effects are applied in batches. Connection caps (global and per IP),
per-IP message and byte quotas (:mod:`engine.inbound.limits`), a size limit and an idle timeout
protect the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

import asyncpg
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from engine import metrics
from engine.backoff import backoff_s
from engine.compose import verp_keys
from engine.compose.unsubscribe import job_of
from engine.config import InboundConfig
from engine.errors import EngineError
from engine.inbound import unsubscribe
from engine.inbound.effects import EffectsConfig, SignalSink, apply
from engine.inbound.intake import Intake, Queued
from engine.inbound.limits import PeerLimits, Refusal
from engine.inbound.matching import InboundItem
from engine.inbound.smtpdata import DataReader
from engine.inbound.trust import InboundTrust
from engine.inbound.workers import ParseWorkers
from engine.store import inbound as inbound_store
from engine.store.pool import Tiers, ping

__all__ = ["InboundHandler", "InboundService", "PeerLimits"]

log = logging.getLogger("engine.inbound")

#: Bytes taken from the socket buffer per step of the DATA phase (the loop runs between steps).
DATA_CHUNK = 64 * 1024
#: Recipients of one SMTP transaction (RFC 5321 §4.5.3.1.8: at least 100 must be taken); a
#: bounce or a complaint has one. Past it: 452, and the client sends the rest in a new one.
MAX_RCPTS = 100
#: Messages parsed, then applied in one transaction, per round.
BATCH = 100
#: While SMTP sessions are storing, the sweep leaves alone rows younger than this (one of them
#: may be about to queue it).
SWEEP_MIN_AGE_S = 30.0
#: No cap on the wait between tries of a failing bounce batch (five tries: 1, 2, 4, 8 and 16
#: times ``apply_retry_s``).
_MAX_APPLY_WAIT_S = float("inf")
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
QUEUE_FULL = "421 4.3.2 Bounce queue full, try again later"


def _refused(refusal: Refusal) -> str:
    metrics.labelled(metrics.INBOUND_REFUSED, refusal.cause).inc()
    return refusal.reply


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with the connection caps (global, per IP) checked before the greeting."""

    limits: PeerLimits
    max_session_s: float = 600.0
    _lifetime: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer_ip = str(peer[0]) if peer else "?"
        refusal = self.limits.connect(self._peer_ip)
        self._counted = refusal is None
        if refusal is not None:
            reply = _refused(refusal)
            transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        # The idle timeout restarts at every command: a client sending NOOPs would hold its
        # slot (and, from a few IPs, every slot of max_connections) for good.
        loop = asyncio.get_running_loop()
        self._lifetime = loop.call_later(self.max_session_s, self._expired, transport)

    def _expired(self, transport: asyncio.BaseTransport) -> None:
        metrics.labelled(metrics.INBOUND_REFUSED, "session_time").inc()
        if not transport.is_closing():
            transport.write(b"421 4.4.2 Session too long, closing\r\n")  # type: ignore[attr-defined]
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lifetime is not None:
            self._lifetime.cancel()
        if getattr(self, "_counted", False):
            self.limits.disconnect(self._peer_ip)
            super().connection_lost(exc)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, read in chunks (:mod:`engine.inbound.smtpdata` says why)."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = DataReader(self.data_size_limit, self.line_length_limit)
        while True:
            chunk = await self._reader.read(DATA_CHUNK)
            if not chunk:
                return  # the client went away
            result = data.feed(chunk)
            if result is not None:
                break
        if result.leftover:
            # Commands pipelined after the end marker: back in front of the reader's buffer,
            # where aiosmtpd's command loop reads next.
            self._reader._buffer[0:0] = result.leftover  # type: ignore[attr-defined]
        if result.body is None:
            await self.push(result.error or "451 4.3.0 Try again later")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = result.body
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


def _declared_size(options: list[str]) -> int | None:
    for option in options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit() and len(value) < 19:
            return int(value)
    return None


class InboundHandler:
    """aiosmtpd handler: RCPT policy and storing DATA before acknowledging it."""

    def __init__(self, service: InboundService) -> None:
        self.service = service
        self.cfg = service.cfg
        self.fbl = {a.lower() for a in service.cfg.fbl_addresses}

    def _verp_job(self, address: str) -> int | None:
        return verp_keys.decode(address, self.cfg)  # current or a previous secret in its window

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        ip = str(session.peer[0]) if session.peer else "?"
        refusal = self.service.limits.message(ip, _declared_size(options))
        if refusal is not None:
            return _refused(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RCPTS:
            return "452 4.5.3 Too many recipients"
        if (
            self._verp_job(address) is None
            and address.lower() not in self.fbl
            and job_of(address, self.cfg) is None
        ):
            return "550 5.7.1 Relaying denied: not a bounce or feedback address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        ip = str(session.peer[0]) if session.peer else "?"
        jobs = [j for j in (self._verp_job(r) for r in envelope.rcpt_tos) if j is not None]
        fbl = any(r.lower() in self.fbl for r in envelope.rcpt_tos)
        queued = bool(jobs or fbl)
        intake = self.service.intake
        # A place in the parse queue first (before storing: the sender keeps the message).
        if queued and not intake.reserve(len(raw)):
            metrics.labelled(metrics.INBOUND_REFUSED, "queue_full").inc()
            return QUEUE_FULL
        refusal = self.service.limits.data(ip, len(raw))
        if refusal is not None:
            if queued:
                intake.release(len(raw))
            return _refused(refusal)
        service = self.service
        # Counted until queued: the sweep must not take a row this session is about to queue.
        service.storing += 1
        service.stores_started += 1
        try:
            try:
                inbound_id = await inbound_store.store_raw(
                    service.content,
                    raw,
                    peer=ip,
                    mail_from=envelope.mail_from or "",
                    rcpt_to=envelope.rcpt_tos,
                    verp_job_id=jobs[0] if jobs else None,
                    fbl=fbl,
                )
            except _DB_ERRORS as exc:
                if queued:
                    intake.release(len(raw))
                log.warning(
                    "cannot store inbound message; sender will retry", extra={"error": str(exc)}
                )
                return "451 4.3.0 Temporary storage failure, try again later"
            if queued:
                to = envelope.rcpt_tos[0]
                job = jobs[0] if jobs else None
                item = Queued(inbound_id, raw, to, job, fbl, ip, envelope.mail_from or "")
                service.submit(item, reserved=True)
        finally:
            service.storing -= 1
        return await self._unsubscribe(envelope, inbound_id, queued)

    async def _unsubscribe(self, envelope: Envelope, inbound_id: int, queued: bool) -> str:
        unsubscribes = [j for j in (job_of(r, self.cfg) for r in envelope.rcpt_tos) if j]
        if unsubscribes:
            # Honoured at once (the law allows 10 days; we take milliseconds).
            try:
                await unsubscribe.apply(
                    self.service.pool,
                    unsubscribes,
                    "mailto",
                    olap_outbox=self.service.effects_cfg.olap_outbox,
                )
            except _DB_ERRORS as exc:
                log.warning("unsubscribe not applied; sender will retry", extra={"error": str(exc)})
                return "451 4.3.0 Temporary failure, try again later"
        if not queued:
            await inbound_store.mark_processed(self.service.content, inbound_id, "unsubscribe")
        return "250 2.0.0 OK stored"


class InboundService:
    """Runs the listener, the parse workers and the batched effects loop in the daemon's loop."""

    #: The parse worker's module (tests run a wrapper of the real one).
    worker_module = "engine.inbound.parse_worker"
    #: First delay between attempts at a failing batch of effects (doubling, 5 attempts).
    apply_retry_s = 0.5

    def __init__(
        self,
        cfg: InboundConfig,
        pool: asyncpg.Pool,
        shaping: SignalSink | None = None,
        *,
        trust: InboundTrust | None = None,
        tiers: Tiers | None = None,
    ) -> None:
        self.cfg = cfg
        # What reports prove (engine/inbound/trust.py); the daemon's knows our DKIM keys.
        self.trust = trust or InboundTrust.for_inbound(cfg)
        self.pool = pool
        tiers = tiers or Tiers(pool)
        # The raw messages (content.inbound_messages) live on the content tier's server.
        self.content = tiers.content
        self.shaping = shaping
        self.limits = PeerLimits(
            cfg.max_connections_per_ip,
            cfg.max_messages_per_minute_per_ip,
            max_total_connections=cfg.max_connections,
            max_messages_per_hour=cfg.max_messages_per_hour_per_ip,
            max_bytes_per_hour=cfg.max_bytes_per_hour_per_ip,
        )
        self.effects_cfg = EffectsConfig(
            cfg.soft_bounce_limit,
            cfg.soft_bounce_window_days,
            cfg.soft_bounce_suppress_days,
            olap_outbox=tiers.olap_apart,
        )
        self.intake = Intake(cfg.queue_max, cfg.queue_max_bytes)
        self.workers: ParseWorkers | None = None
        self._server: asyncio.AbstractServer | None = None
        self._last_sweep = 0.0
        self._sweep_again = False  # the last sweep found rows: look again once the queue drains
        self.storing = 0  # SMTP sessions between storing a message and queueing it
        self.stores_started = 0
        self.port: int | None = None

    def submit(self, item: Queued, *, reserved: bool = False) -> bool:
        """Queue a stored message for parsing (False: already queued or in work)."""
        added = self.intake.put(item, reserved=reserved)
        metrics.INBOUND_QUEUE_DEPTH.set(self.intake.depth)
        return added

    def _tls(self) -> ssl.SSLContext | None:
        if not (self.cfg.tls_cert_file and self.cfg.tls_key_file):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cfg.tls_cert_file, self.cfg.tls_key_file)
        return ctx

    async def start(self) -> None:
        """Start the parse workers, queue a first page of stored messages, then listen."""
        workers = ParseWorkers(
            self.cfg.parse_workers, self.cfg.parse_cpu_budget_ms, self.worker_module
        )
        try:
            await workers.start()
        except OSError as exc:
            await workers.close()
            raise EngineError(
                f"cannot start the bounce parse worker: {exc}",
                hint="check that the engine's Python environment is intact",
            ) from None
        self.workers = workers
        # No SMTP session runs yet: every stored, unprocessed row is a leftover.
        await self._sweep()
        host, _, port = self.cfg.listen.rpartition(":")
        handler = InboundHandler(self)
        tls = self._tls()
        limits = self.limits

        def factory() -> SMTP:
            smtp = _LimitedSMTP(
                handler,
                data_size_limit=self.cfg.max_message_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=self.cfg.verp_domain,
                tls_context=tls,
                timeout=self.cfg.timeout_s,
            )
            smtp.limits = limits
            smtp.max_session_s = self.cfg.max_session_s
            return smtp

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host or "0.0.0.0", int(port))
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("inbound listener started", extra={"listen": f"{host}:{self.port}"})

    async def _sweep(self) -> None:
        """Queue stored messages nobody queued (a restart, a requeue), as many as fit."""
        self._last_sweep = time.monotonic()
        items, room_bytes = self.intake.room()
        if items <= 0:
            self._sweep_again = True
            return
        # While a session stores a message, a row it is about to queue must not be taken: then
        # only rows older than SWEEP_MIN_AGE_S (or requeued ones) are, and a page read while a
        # store began is dropped (the next sweep comes at once).
        busy = self.storing > 0
        started = self.stores_started
        try:
            rows = await inbound_store.pending(
                self.content,
                min(items, BATCH),
                exclude=self.intake.known(),
                min_age_s=SWEEP_MIN_AGE_S if busy else 0.0,
                max_bytes=max(room_bytes, 1),
            )
        except _DB_ERRORS as exc:
            log.warning("cannot read stored inbound messages", extra={"error": str(exc)})
            return
        if not busy and self.stores_started != started:
            self._sweep_again = True
            return
        self._sweep_again = bool(rows)
        for r in rows:
            to = r.rcpt_to[0] if r.rcpt_to else None
            self.submit(Queued(r.id, r.raw, to, r.verp_job_id, r.fbl, r.peer, r.mail_from))

    async def run(self, stop: asyncio.Event) -> None:
        """Parse and apply queued messages in batches until ``stop`` (then drain the queue)."""
        while not (stop.is_set() and self.intake.queued == 0):
            if not stop.is_set():
                due = time.monotonic() - self._last_sweep >= self.cfg.sweep_interval_s
                if due or (self._sweep_again and self.intake.queued == 0):
                    await self._sweep()
            if not await self.intake.wait(0.5):
                continue
            try:
                await self._process(self.intake.take(BATCH))
            except Exception as exc:  # the loop must not die: the rows stay for the sweep
                log.exception("inbound batch failed", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    async def _process(self, batch: list[Queued]) -> None:
        assert self.workers is not None, "start() first"
        workers = self.workers
        try:
            outcomes = await asyncio.gather(*(workers.parse(q.raw, q.envelope_to) for q in batch))
            items: list[InboundItem] = []
            cpu: list[tuple[int, float]] = []
            for q, outcome in zip(batch, outcomes, strict=True):
                metrics.INBOUND_PARSE_CPU.observe(outcome.cpu_ms / 1000)
                if outcome.analysis is None:
                    reason = outcome.quarantine or "unknown"
                    await self._quarantine(q, reason, outcome.cause or "error", outcome.cpu_ms)
                    continue
                analysis = outcome.analysis
                items.append(
                    InboundItem(
                        q.inbound_id,
                        analysis.report,
                        q.verp_job_id,
                        q.fbl,
                        peer=q.peer,
                        mail_from=q.mail_from,
                        evidence=analysis.evidence,
                    )
                )
                cpu.append((q.inbound_id, outcome.cpu_ms))
            error = await self._apply(items) if items else None
            if error is not None:
                by_id = {q.inbound_id: (q, o.cpu_ms) for q, o in zip(batch, outcomes, strict=True)}
                await self._isolate(items, error, by_id)
            with contextlib.suppress(*_DB_ERRORS):
                await inbound_store.record_parse_cpu(self.content, cpu)
        finally:
            for q in batch:
                self.intake.done(q.inbound_id)
            metrics.INBOUND_QUEUE_DEPTH.set(self.intake.depth)

    async def _apply_once(self, items: list[InboundItem]) -> None:
        """The one call into the effects layer (one transaction)."""
        await apply(
            self.pool, items, self.effects_cfg, self.shaping, trust=self.trust, content=self.content
        )

    async def _apply(self, items: list[InboundItem]) -> Exception | None:
        """Apply a batch, retried with backoff; the last error if it never worked."""
        error: Exception | None = None
        for attempt in range(5):
            try:
                await self._apply_once(items)
                return None
            except Exception as exc:  # any error (asyncpg.InternalClientError too)
                # The raw messages are stored: if this never succeeds the sweep queues them
                # again (processed_at stays NULL); the loop itself must not die.
                log.warning("bounce effects failed; retrying", extra={"error": repr(exc)})
                error = exc
                await asyncio.sleep(
                    backoff_s(
                        attempt + 1, base_s=self.apply_retry_s, max_s=_MAX_APPLY_WAIT_S, jitter=0.0
                    )
                )
        return error

    async def _isolate(
        self, items: list[InboundItem], error: Exception, by_id: dict[int, tuple[Queued, float]]
    ) -> None:
        """A batch kept failing. With PostgreSQL up, the messages it fails on are poison:
        quarantined (``effects failed``), so that they cannot hold up every later batch."""
        try:
            await ping(self.pool)
            if self.content is not self.pool:
                await ping(self.content)
        except Exception:
            return  # PostgreSQL is the problem: all stay pending, the sweep brings them back
        failed: list[tuple[InboundItem, Exception]] = []
        if len(items) == 1:
            failed.append((items[0], error))
        else:
            for item in items:
                try:
                    await self._apply_once([item])
                except Exception as exc:
                    failed.append((item, exc))
        for item, why in failed:
            q, cpu_ms = by_id[item.inbound_id]
            await self._quarantine(q, f"effects failed: {why!r}"[:500], "effects", cpu_ms)

    async def _quarantine(self, q: Queued, reason: str, cause: str, cpu_ms: float) -> None:
        metrics.labelled(metrics.INBOUND_QUARANTINED, cause).inc()
        log.warning(
            "inbound message quarantined; `engine bounce requeue ID` parses it again",
            extra={
                "inbound_id": q.inbound_id,
                "reason": reason,
                "cpu_ms": round(cpu_ms, 1),
                "peer": q.peer,
                "size": len(q.raw),
            },
        )
        try:
            await inbound_store.quarantine(self.content, q.inbound_id, reason, cpu_ms)
        except _DB_ERRORS as exc:
            # Not marked: the sweep queues it again later, and it is parsed (and quarantined) again.
            log.warning("cannot mark quarantined message", extra={"error": str(exc)})

    async def stop(self) -> None:
        """Stop listening and end the parse workers."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self.workers is not None:
            await self.workers.close()
