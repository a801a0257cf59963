"""The inbound SMTP listener (aiosmtpd) for bounces (VERP) and feedback-loop reports (FBL).

Not an open relay: RCPT is accepted only for a VERP address whose HMAC checks out or a configured
FBL/abuse address; anything else is refused at RCPT. The raw message is stored (compressed, in
the content tier) before the 250 is sent, then parsed and applied in batches off the SMTP path.
Per-IP connection and message-rate limits, a size limit and an idle timeout protect the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.compose import verp
from engine.config import InboundConfig
from engine.inbound import unsubscribe
from engine.inbound.effects import EffectsConfig, InboundItem, SignalSink, apply
from engine.inbound.evidence import analyse
from engine.store import inbound as inbound_store

log = logging.getLogger("engine.inbound")


class PeerLimits:
    """Open connections and messages per minute, per client IP (sans-IO, injectable clock)."""

    def __init__(self, max_connections: int, max_per_minute: int, clock: Any = time.monotonic):
        self.max_connections = max_connections
        self.max_per_minute = max_per_minute
        self.clock = clock
        self.open: dict[str, int] = defaultdict(int)
        self._recent: dict[str, deque[float]] = defaultdict(deque)

    def connect(self, ip: str) -> bool:
        if self.open[ip] >= self.max_connections:
            return False
        self.open[ip] += 1
        return True

    def disconnect(self, ip: str) -> None:
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            self.open.pop(ip, None)

    def message(self, ip: str) -> bool:
        now = self.clock()
        q = self._recent[ip]
        while q and q[0] < now - 60:
            q.popleft()
        if len(q) >= self.max_per_minute:
            return False
        q.append(now)
        return True


class _LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with a per-IP connection cap checked before the greeting."""

    limits: PeerLimits

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer_ip = str(peer[0]) if peer else "?"
        self._counted = self.limits.connect(self._peer_ip)
        if not self._counted:
            transport.write(b"421 4.7.0 Too many connections from your address\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_counted", False):
            self.limits.disconnect(self._peer_ip)
            super().connection_lost(exc)


class InboundHandler:
    """aiosmtpd handler: RCPT policy and storing DATA before acknowledging it."""

    def __init__(self, service: InboundService) -> None:
        self.service = service
        self.cfg = service.cfg
        self.fbl = {a.lower() for a in service.cfg.fbl_addresses}

    def _verp_job(self, address: str) -> int | None:
        return verp.decode(address, domain=self.cfg.verp_domain, secret=self.cfg.verp_secret)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        ip = str(session.peer[0]) if session.peer else "?"
        if not self.service.limits.message(ip):
            return "421 4.7.0 Too many messages from your address, slow down"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (
            self._verp_job(address) is None
            and address.lower() not in self.fbl
            and unsubscribe.job_of(address, self.cfg) is None
        ):
            return "550 5.7.1 Relaying denied: not a bounce or feedback address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        jobs = [j for j in (self._verp_job(r) for r in envelope.rcpt_tos) if j is not None]
        fbl = any(r.lower() in self.fbl for r in envelope.rcpt_tos)
        try:
            inbound_id = await inbound_store.store_raw(
                self.service.pool,
                raw,
                peer=str(session.peer[0]) if session.peer else "?",
                mail_from=envelope.mail_from or "",
                rcpt_to=envelope.rcpt_tos,
                verp_job_id=jobs[0] if jobs else None,
                fbl=fbl,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "cannot store inbound message; sender will retry", extra={"error": str(exc)}
            )
            return "451 4.3.0 Temporary storage failure, try again later"
        unsubscribes = [
            j for j in (unsubscribe.job_of(r, self.cfg) for r in envelope.rcpt_tos) if j
        ]
        if unsubscribes:
            # Honoured at once (the law allows 10 days; we take milliseconds).
            try:
                await unsubscribe.apply(self.service.pool, unsubscribes, "mailto")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("unsubscribe not applied; sender will retry", extra={"error": str(exc)})
                return "451 4.3.0 Temporary failure, try again later"
        if jobs or fbl:
            self.service.submit(
                inbound_id, raw, envelope.rcpt_tos[0], jobs[0] if jobs else None, fbl
            )
        else:
            await inbound_store.mark_processed(self.service.pool, inbound_id, "unsubscribe")
        return "250 2.0.0 OK stored"


class InboundService:
    """Runs the listener and the batched effects worker inside the daemon's event loop."""

    def __init__(
        self, cfg: InboundConfig, pool: asyncpg.Pool, shaping: SignalSink | None = None
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.shaping = shaping
        self.limits = PeerLimits(cfg.max_connections_per_ip, cfg.max_messages_per_minute_per_ip)
        self.effects_cfg = EffectsConfig(
            cfg.soft_bounce_limit, cfg.soft_bounce_window_days, cfg.soft_bounce_suppress_days
        )
        self._queue: asyncio.Queue[tuple[int, bytes, str | None, int | None, bool]] = (
            asyncio.Queue()
        )
        self._server: asyncio.AbstractServer | None = None
        # Parsing is CPU work; one thread keeps a bounce storm from stalling the SMTP loop.
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bounce-parse")
        self.port: int | None = None

    def submit(
        self, inbound_id: int, raw: bytes, envelope_to: str | None, job: int | None, fbl: bool
    ) -> None:
        self._queue.put_nowait((inbound_id, raw, envelope_to, job, fbl))

    def _tls(self) -> ssl.SSLContext | None:
        if not (self.cfg.tls_cert_file and self.cfg.tls_key_file):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cfg.tls_cert_file, self.cfg.tls_key_file)
        return ctx

    async def start(self) -> None:
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
            return smtp

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host or "0.0.0.0", int(port))
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("inbound listener started", extra={"listen": f"{host}:{self.port}"})
        for item in await inbound_store.unprocessed(self.pool):
            self.submit(
                item.id,
                item.raw,
                item.rcpt_to[0] if item.rcpt_to else None,
                item.verp_job_id,
                item.fbl,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Parse and apply queued messages in batches until ``stop`` (then drain the queue)."""
        loop = asyncio.get_running_loop()
        while not (stop.is_set() and self._queue.empty()):
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            batch = [first]
            while not self._queue.empty() and len(batch) < 200:
                batch.append(self._queue.get_nowait())
            items = await loop.run_in_executor(self._parser, _parse_all, batch)
            for attempt in range(5):
                try:
                    await apply(self.pool, items, self.effects_cfg, self.shaping)
                    break
                except Exception as exc:  # any error (asyncpg.InternalClientError too)
                    # The raw messages are stored: if this never succeeds they are applied at
                    # the next start (processed_at stays NULL); the loop itself must not die.
                    log.warning("bounce effects failed; retrying", extra={"error": repr(exc)})
                    await asyncio.sleep(0.5 * 2**attempt)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self._parser.shutdown(wait=False)


def _parse_all(batch: list[tuple[int, bytes, str | None, int | None, bool]]) -> list[InboundItem]:
    items = []
    for inbound_id, raw, envelope_to, job, fbl in batch:
        analysis = analyse(raw, envelope_to)
        items.append(
            InboundItem(inbound_id, analysis.report, job, fbl, evidence=analysis.evidence)
        )
    return items
