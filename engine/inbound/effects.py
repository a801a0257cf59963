"""What a bounce or complaint changes, applied in batches (one transaction per batch).

Hard bounce → job ``bounced``, address suppressed permanently for the tenant, OLAP
``bounced_hard``, a HARD_BOUNCE signal to shaping. Soft bounce → job ``bounced``, counted; after
``soft_bounce_limit`` within the window the address is suppressed for a while. Complaint (ARF) →
job ``complained``, address suppressed permanently for the tenant, COMPLAINT signal. Auto-replies
are recorded as events and never count as bounces. Every effect is an event row.

A report is mapped to its job by the VERP address (HMAC-checked by the listener) or else by the
original Message-ID; reports that map to no job are kept raw and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import msgspec

from engine import metrics
from engine.inbound.evidence import Evidence
from engine.inbound.report import BounceKind, BounceReport, Recipient
from engine.shaping.model import DeliverySignal, SignalKind
from engine.store import stats
from engine.store import suppressions as suppression_store

log = logging.getLogger("engine.inbound")

#: RFC 3464 Action values that are not failures: nothing to do but keep the event.
_NOT_FAILED = {"delivered", "relayed", "expanded"}


class SignalSink(Protocol):
    """The part of :class:`engine.shaping.shaper.Shaper` bounces feed."""

    def record(self, signal: DeliverySignal | None) -> None: ...

    async def resolve_providers(self, domains: Iterable[str]) -> Mapping[str, Any]: ...


class InboundItem(msgspec.Struct, frozen=True):
    """One stored inbound message and what the listener knew when it accepted it."""

    inbound_id: int
    report: BounceReport
    verp_job_id: int | None = None
    fbl: bool = False
    peer: str = ""  # the connecting client's IP
    mail_from: str = ""  # the SMTP envelope sender
    evidence: Evidence = Evidence()


class Effect(msgspec.Struct, frozen=True):
    """What one inbound message changed (for logs and tests)."""

    inbound_id: int
    job_id: int | None
    kind: str  # bounced_hard | bounced_soft | complained | autoreply | delayed | ignored
    address: str | None = None
    reason: str | None = None


class _Job(msgspec.Struct, frozen=True):
    id: int
    tenant_id: str
    sender: str
    recipient: str
    message_id: str | None


async def _jobs(conn: Any, items: Sequence[InboundItem]) -> dict[int, _Job]:
    ids = [i.verp_job_id for i in items if i.verp_job_id]
    mids = [
        i.report.hints.message_id for i in items if not i.verp_job_id and i.report.hints.message_id
    ]
    if not ids and not mids:
        return {}
    rows = await conn.fetch(
        "SELECT id, tenant_id, sender, recipient, message_id FROM queue.jobs"
        " WHERE id = ANY($1::bigint[]) OR message_id = ANY($2::text[])",
        ids,
        mids,
    )
    return {
        r["id"]: _Job(r["id"], r["tenant_id"], r["sender"], r["recipient"], r["message_id"])
        for r in rows
    }


def _job_for(item: InboundItem, jobs: dict[int, _Job], by_mid: dict[str, _Job]) -> _Job | None:
    if item.verp_job_id:
        return jobs.get(item.verp_job_id)
    mid = item.report.hints.message_id
    return by_mid.get(mid) if mid else None


def _failed(recipients: Sequence[Recipient], job: _Job) -> Recipient | None:
    """The recipient line about this job's address (or the only one, if forwarded/rewritten)."""
    failed = [r for r in recipients if (r.action or "failed").lower() not in _NOT_FAILED]
    for r in failed:
        if r.address.lower() == job.recipient.lower():
            return r
    return failed[0] if len(failed) == 1 else None


class _Batch:
    """Rows to write for one batch of inbound messages."""

    def __init__(self) -> None:
        self.states: dict[int, str] = {}
        self.suppress: list[tuple[str, str, str, str, float | None]] = []
        self.events: list[
            tuple[str, int | None, str, str | None, str | None, str | None, str | None]
        ] = []
        self.stats: list[tuple[tuple[str, str, str], str, int]] = []
        self.signals: list[tuple[DeliverySignal, str]] = []
        self.soft: list[tuple[str, str]] = []
        self.processed: list[tuple[int, int | None, str | None, str]] = []
        self.effects: list[Effect] = []


def _apply_one(item: InboundItem, job: _Job | None, b: _Batch) -> None:
    report = item.report
    kind = report.kind
    if job is None:
        b.processed.append((item.inbound_id, None, None, kind.value))
        b.effects.append(Effect(item.inbound_id, None, "ignored"))
        return
    tenant, key = job.tenant_id, (job.tenant_id, job.sender, "")
    domain = job.recipient.rpartition("@")[2].lower()
    b.processed.append((item.inbound_id, job.id, tenant, kind.value))
    if kind is BounceKind.ARF:
        ftype = report.feedback_type or "abuse"
        metrics.COMPLAINTS.labels(ftype).inc()
        if ftype == "not-spam":
            b.events.append(
                (tenant, job.id, "not_spam", job.recipient, job.message_id, ftype, None)
            )
            b.effects.append(Effect(item.inbound_id, job.id, "not_spam", job.recipient))
            return
        b.states[job.id] = "complained"
        b.suppress.append((tenant, job.recipient, "feedback", "complaint", None))
        b.events.append((tenant, job.id, "complained", job.recipient, job.message_id, ftype, None))
        b.stats.append((key, "complained", 1))
        signal = DeliverySignal(tenant, job.sender, "", SignalKind.COMPLAINT, attempt=False)
        b.signals.append((signal, domain))
        b.effects.append(Effect(item.inbound_id, job.id, "complained", job.recipient, "feedback"))
        return
    if kind is BounceKind.AUTOREPLY:
        b.events.append(
            (tenant, job.id, "autoreply", job.recipient, job.message_id, "vacation", None)
        )
        b.effects.append(Effect(item.inbound_id, job.id, "autoreply", job.recipient, "vacation"))
        return
    if kind not in (BounceKind.DSN, BounceKind.NONSTANDARD):
        b.effects.append(Effect(item.inbound_id, job.id, "ignored"))
        return
    rcpt = _failed(report.recipients, job)
    if rcpt is None:
        delayed = any((r.action or "").lower() == "delayed" for r in report.recipients)
        if delayed:
            b.events.append((tenant, job.id, "delayed", job.recipient, job.message_id, None, None))
        b.effects.append(Effect(item.inbound_id, job.id, "delayed" if delayed else "ignored"))
        return
    reply = " ".join(x for x in (rcpt.reply_code, rcpt.status, rcpt.diagnostic) if x) or None
    reason = rcpt.reason.value
    metrics.BOUNCES.labels(reason, str(rcpt.hard).lower()).inc()
    b.states[job.id] = "bounced"
    if rcpt.hard:
        b.suppress.append((tenant, job.recipient, reason, "bounce", None))
        b.stats.append((key, "bounced_hard", 1))
        b.signals.append((_bounce_signal(job, SignalKind.HARD_BOUNCE, rcpt), domain))
        b.events.append((tenant, job.id, "bounced", job.recipient, job.message_id, reason, reply))
        b.effects.append(Effect(item.inbound_id, job.id, "bounced_hard", job.recipient, reason))
    else:
        b.stats.append((key, "bounced_soft", 1))
        b.soft.append((tenant, job.recipient))
        b.signals.append((_bounce_signal(job, SignalKind.SOFT_BOUNCE, rcpt), domain))
        b.events.append(
            (tenant, job.id, "soft_bounced", job.recipient, job.message_id, reason, reply)
        )
        b.effects.append(Effect(item.inbound_id, job.id, "bounced_soft", job.recipient, reason))


def _bounce_signal(job: _Job, kind: SignalKind, rcpt: Recipient) -> DeliverySignal:
    return DeliverySignal(
        job.tenant_id,
        job.sender,
        "",
        kind,
        reply_code=_int(rcpt.reply_code),
        enhanced_status=rcpt.status,
        attempt=False,
    )


def _int(code: str | None) -> int | None:
    return int(code) if code and code.isascii() and code.isdigit() else None


class EffectsConfig(msgspec.Struct, frozen=True):
    soft_bounce_limit: int = 3
    soft_bounce_window_days: int = 7
    soft_bounce_suppress_days: int = 30


async def apply(
    pool: asyncpg.Pool,
    items: Sequence[InboundItem],
    cfg: EffectsConfig | None = None,
    shaping: SignalSink | None = None,
) -> list[Effect]:
    """Apply a batch of parsed inbound messages in one transaction; returns what changed."""
    if not items:
        return []
    cfg = cfg or EffectsConfig()
    b = _Batch()
    async with pool.acquire() as conn, conn.transaction():
        jobs = await _jobs(conn, items)
        by_mid = {j.message_id: j for j in jobs.values() if j.message_id}
        for item in items:
            _apply_one(item, _job_for(item, jobs, by_mid), b)
        if b.states:
            ids = list(b.states)
            await conn.execute(
                "UPDATE queue.jobs j SET state = u.st, updated_at = now(),"
                " finished_at = coalesce(j.finished_at, now())"
                " FROM unnest($1::bigint[], $2::text[]) AS u(id, st)"
                " WHERE j.id = u.id AND j.state <> 'cancelled'"
                " AND NOT (j.state = 'complained' AND u.st = 'bounced')",
                ids,
                [b.states[i] for i in ids],
            )
        if b.events:
            await _events(conn, b.events)
        if b.soft:
            b.suppress.extend(await _soft_over_limit(conn, b.soft, cfg))
        await suppression_store.add(conn, b.suppress)
        await stats.add(conn, b.stats)
        await conn.execute(
            "UPDATE content.inbound_messages m SET processed_at = now(), job_id = u.job,"
            " tenant_id = u.t, kind = u.k"
            " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(id, job, t, k)"
            " WHERE m.id = u.id",
            [p[0] for p in b.processed],
            [p[1] for p in b.processed],
            [p[2] for p in b.processed],
            [p[3] for p in b.processed],
        )
    if shaping is not None and b.signals:
        await _signal(shaping, b.signals)
    return b.effects


async def _signal(shaping: SignalSink, signals: Sequence[tuple[DeliverySignal, str]]) -> None:
    """Feed shaping, naming each signal's receiving provider (cached MX rollup)."""
    try:
        providers = await shaping.resolve_providers({d for _, d in signals})
    except Exception as exc:  # shaping feedback only tunes rates; never fail the batch for it
        log.warning("provider lookup for bounce signals failed", extra={"error": str(exc)})
        providers = {}
    for sig, domain in signals:
        provider = providers.get(domain)
        name = getattr(provider, "name", None) or domain
        shaping.record(msgspec.structs.replace(sig, provider=name))


async def _events(conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    await conn.execute(
        "INSERT INTO oltp.events (tenant_id, job_id, kind, recipient, message_id, reason, reply)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
        " $6::text[], $7::text[])",
        *[[r[i] for r in rows] for i in range(7)],
    )


async def _soft_over_limit(
    conn: Any, pairs: Sequence[tuple[str, str]], cfg: EffectsConfig
) -> list[tuple[str, str, str, str, float | None]]:
    """Addresses whose soft bounces in the window reached the limit (this batch included)."""
    rows = await conn.fetch(
        "SELECT e.tenant_id, e.recipient FROM oltp.events e"
        " JOIN unnest($1::text[], $2::text[]) AS u(t, a)"
        " ON e.tenant_id = u.t AND lower(e.recipient) = lower(u.a)"
        " WHERE e.kind = 'soft_bounced'"
        " AND e.created_at > now() - make_interval(days => $3)"
        " GROUP BY e.tenant_id, e.recipient HAVING count(*) >= $4",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        cfg.soft_bounce_window_days,
        cfg.soft_bounce_limit,
    )
    ttl = cfg.soft_bounce_suppress_days * 86400.0
    return [(r["tenant_id"], r["recipient"], "soft_bounce_limit", "bounce", ttl) for r in rows]
