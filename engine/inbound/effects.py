"""What a bounce or complaint changes, applied in batches (one transaction per batch).

Hard bounce → job ``bounced``, address suppressed permanently for the tenant, OLAP
``bounced_hard``, a HARD_BOUNCE signal to shaping. Soft bounce → job ``bounced``, counted; after
``soft_bounce_limit`` within the window the address is suppressed for a while. Complaint (ARF) →
job ``complained``, address suppressed permanently for the tenant, COMPLAINT signal. Auto-replies
are recorded as events and never count as bounces. Every effect is an event row.

Trust (DESIGN §7, :mod:`engine.inbound.trust`): a report changes state only when it proves which
job it is about. A bounce: a valid VERP address (HMAC-checked by the listener), our ENVID, or our
own DKIM signature in the quoted original (the job is the one of the *signed* Message-ID). A
complaint: our own signature, or an authenticated ``[[inbound.fbl_reporters]]`` reporter (then
matched by VERP, our signature, the Message-ID with the job's recipient, or our Feedback-ID).
Anything else that names a job is recorded as an ``unverified_complaint`` /
``unverified_bounce`` event and counted in ``engine_inbound_unverified_total``; it changes
nothing. Each (job, class) counts once
(``oltp.inbound_counted``): replays change nothing either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import msgspec

from engine import metrics
from engine.events.model import EventKind
from engine.inbound.arf import FeedbackType
from engine.inbound.matching import (
    BOUNCE_KINDS,
    InboundItem,
    Job,
    Match,
    by_message_id,
    failed_line,
    job_from_row,
    jobs_named,
    line_about_job,
    match_report,
)
from engine.inbound.report import BounceKind, Recipient
from engine.inbound.trust import Assessment, InboundTrust
from engine.shaping.model import DeliverySignal, SignalKind
from engine.smtp.codes import ReplyCode
from engine.store import facts, olap_outbox, stats
from engine.store import inbound as inbound_store
from engine.store import inbound_effects as effects_store
from engine.store import inbound_trust as trust_store
from engine.store import suppressions as suppression_store
from engine.store.pool import apart

log = logging.getLogger("engine.inbound")

_DELAYED = "delayed"
#: A success notice (NOTIFY=SUCCESS, RFC 3461 §4.1): ``delivered`` by a final MTA, ``relayed``
#: to a next hop that offers no DSN (what a relay node says of most providers). Both mean the
#: provider accepted the message: a ``delivered`` event, never a state change.
_SUCCEEDED = frozenset({"delivered", "relayed"})
#: RFC 3463 §3.8: 4.7.x is a temporary security/policy status ("slow down", greylisting).
_THROTTLE_CLASS = "4.7."


class SignalSink(Protocol):
    """The part of :class:`engine.shaping.shaper.Shaper` bounces feed."""

    def record(self, signal: DeliverySignal | None) -> None: ...

    async def resolve_providers(self, domains: Iterable[str]) -> Mapping[str, Any]: ...


class Effect(msgspec.Struct, frozen=True):
    """What one inbound message changed (for logs and tests)."""

    inbound_id: int
    job_id: int | None
    # bounced_hard | bounced_soft | complained | not_spam | auth_failure | autoreply | delayed |
    # delivered | ignored | unverified_complaint | unverified_bounce | replayed | waiting
    kind: str
    address: str | None = None
    reason: str | None = None


#: Feedback types a metric label may take (an attacker chooses the field's text).
_FEEDBACK_LABELS = frozenset(t.value for t in FeedbackType)
#: Feedback reports that are not a recipient's complaint, and the event each one records:
#: "not-spam" takes a complaint back; "auth-failure" (RFC 6591) and "dmarc" (RFC 7489 failure
#: reports) tell of a DKIM/SPF/DMARC failure the receiver saw: about our authentication, so they
#: neither suppress the recipient nor slow the sender.
_NOT_COMPLAINTS = {
    FeedbackType.NOT_SPAM.value: EventKind.NOT_SPAM.value,
    FeedbackType.AUTH_FAILURE.value: EventKind.AUTH_FAILURE.value,
    FeedbackType.DMARC.value: EventKind.AUTH_FAILURE.value,
}
_UNVERIFIED_EVENT = {
    "complaint": EventKind.UNVERIFIED_COMPLAINT.value,
    "bounce": EventKind.UNVERIFIED_BOUNCE.value,
}


def feedback_label(ftype: str | None) -> str:
    """``ftype`` when it is an RFC 5965/6591/6650 type, else ``other`` (bounded label set)."""
    value = (ftype or FeedbackType.ABUSE.value).lower()
    return value if value in _FEEDBACK_LABELS else FeedbackType.OTHER.value


class _Batch:
    """Rows to write for one batch of inbound messages.

    ``providers`` maps a recipient domain to its provider's name (the MX rollup, resolved once
    per batch before the transaction); a domain missing from it is recorded with provider ``''``
    in the counters and without ``provider`` in the event's ``data``.
    """

    def __init__(
        self,
        providers: Mapping[str, str] | None = None,
        arrived: Mapping[int, float] | None = None,
    ) -> None:
        self.providers: Mapping[str, str] = providers or {}
        self.arrived: Mapping[int, float] = arrived or {}  # inbound id -> received at
        self.data: dict[int, str] = {}  # job id -> oltp.events.data (JSON)
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
        self.facts: list[facts.Fact] = []
        self.latencies: list[facts.Latency] = []
        # inbound id -> parsed (status, diagnostic, remote MTA, reason), kept with the raw
        self.details: dict[int, tuple[str | None, str | None, str | None, str | None]] = {}

    def provider(self, job: Job) -> str:
        """The job's provider: the one it was sent to, else its recipient domain's MX rollup."""
        return job.provider or self.providers.get(job.domain, "")

    def fact(self, job: Job, outcome: str, reason: str | None = None) -> None:
        """Count ``outcome`` of ``job`` on the day it was sent (OLAP, docs/analytics.md)."""
        self.facts.append(
            facts.Fact(
                job.tenant_id,
                facts.day_of(job.relayed_at),
                job.campaign_id or "",
                job.sender,
                self.provider(job),
                outcome,
                reason or "",
            )
        )

    def detail(self, item: InboundItem, rcpt: Recipient) -> None:
        """Keep the parsed status, diagnostic, remote MTA and reason with the raw message."""
        diagnostic = (rcpt.diagnostic or "")[:1000] or None
        self.details[item.inbound_id] = (
            rcpt.status,
            diagnostic,
            rcpt.remote_mta,
            rcpt.reason.value,
        )

    def key(self, job: Job) -> tuple[str, str, str]:
        """The daily_stats key of a job's outcome: (tenant, sender, provider)."""
        return (job.tenant_id, job.sender, self.provider(job))

    def note(self, job: Job, **extra: Any) -> None:
        """What every event about ``job`` carries in ``data``: sender, provider, relay node,
        and ``extra`` (set only for the one event of the job that has them)."""
        data: dict[str, Any] = {"sender": job.sender}
        if provider := self.provider(job):
            data["provider"] = provider
        if job.relay_node:
            data["node"] = job.relay_node
        data.update((k, v) for k, v in extra.items() if v is not None)
        self.data[job.id] = msgspec.json.encode(data).decode()


def _class_of(item: InboundItem, match: Match) -> str | None:
    """The replay class (complaint | hard | soft) of a proven report that would count."""
    job, report = match.job, item.report
    if job is None or not match.proven:
        return None
    if report.kind is BounceKind.ARF:
        return None if feedback_label(report.feedback_type) in _NOT_COMPLAINTS else "complaint"
    if report.kind in BOUNCE_KINDS:
        rcpt = failed_line(report.recipients, job)
        if rcpt is not None:
            return "hard" if rcpt.hard else "soft"
    return None


def _apply_one(item: InboundItem, match: Match, b: _Batch, replay: bool) -> None:
    report = item.report
    kind = report.kind
    job = match.job
    if job is None:
        if not match.proven and kind in (BounceKind.ARF, *BOUNCE_KINDS):
            metrics.INBOUND_UNVERIFIED.labels(_unverified_kind(kind)).inc()
        b.processed.append((item.inbound_id, None, None, kind.value))
        b.effects.append(Effect(item.inbound_id, None, "ignored"))
        return
    tenant, key, domain = job.tenant_id, b.key(job), job.domain
    b.note(job)
    b.processed.append((item.inbound_id, job.id, tenant, kind.value))
    if kind in (BounceKind.ARF, *BOUNCE_KINDS) and not match.proven:
        _unverified(item, job, b)
        return
    if replay:
        klass = _class_of(item, match) or "complaint"
        metrics.INBOUND_REPLAYED.labels(klass).inc()
        b.effects.append(Effect(item.inbound_id, job.id, "replayed", job.recipient, klass))
        return
    if kind is BounceKind.ARF:
        ftype = feedback_label(report.feedback_type)
        metrics.COMPLAINTS.labels(ftype).inc()
        if ftype in _NOT_COMPLAINTS:
            event = _NOT_COMPLAINTS[ftype]
            b.events.append((tenant, job.id, event, job.recipient, job.message_id, ftype, None))
            b.effects.append(Effect(item.inbound_id, job.id, event, job.recipient))
            return
        b.states[job.id] = "complained"
        b.suppress.append((tenant, job.recipient, "feedback", "complaint", None))
        b.events.append((tenant, job.id, "complained", job.recipient, job.message_id, ftype, None))
        b.stats.append((key, "complained", 1))
        b.fact(job, "complained", ftype)
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
    if kind not in BOUNCE_KINDS:
        b.effects.append(Effect(item.inbound_id, job.id, "ignored"))
        return
    _bounce(item, job, b)


def _bounce(item: InboundItem, job: Job, b: _Batch) -> None:
    report = item.report
    tenant, key, domain = job.tenant_id, b.key(job), job.domain
    rcpt = failed_line(report.recipients, job)
    if rcpt is None:
        done = line_about_job(
            [r for r in report.recipients if (r.action or "").lower() in _SUCCEEDED], job
        )
        if done is not None:
            _delivered(item, job, done, b)
            return
        delay = line_about_job(
            [r for r in report.recipients if (r.action or "").lower() == _DELAYED], job
        )
        if delay is not None:
            reason = delay.reason.value
            b.events.append(
                (tenant, job.id, "delayed", job.recipient, job.message_id, reason, _reply(delay))
            )
            b.signals.append((_delay_signal(job, delay), domain))
        b.effects.append(Effect(item.inbound_id, job.id, "delayed" if delay else "ignored"))
        return
    reply = _reply(rcpt)
    reason = rcpt.reason.value
    b.detail(item, rcpt)
    b.fact(job, "bounced" if rcpt.hard else "soft_bounced", reason)
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


def _delivered(item: InboundItem, job: Job, rcpt: Recipient, b: _Batch) -> None:
    """A success notice: the provider's acceptance as a ``delivered`` event (its reply, the
    remote MTA, the seconds from enqueue to the notice's arrival). The job keeps its state."""
    arrived = b.arrived.get(item.inbound_id)
    latency = None
    b.detail(item, rcpt)
    b.fact(job, "delivered")
    if arrived is not None and job.created_at is not None:
        latency = round(max(0.0, arrived - job.created_at), 3)
        metrics.DELIVERED.labels(b.provider(job) or "other").observe(latency)
        b.latencies.append(
            facts.Latency(
                job.tenant_id,
                facts.day_of(job.relayed_at),
                job.campaign_id or "",
                "delivery",
                latency * 1000,
            )
        )
    b.note(
        job,
        remote_mta=rcpt.remote_mta,
        dsn_action=(rcpt.action or "").lower(),
        enqueue_to_delivered_s=latency,
    )
    reply = rcpt.diagnostic or _reply(rcpt)
    b.events.append(
        (job.tenant_id, job.id, "delivered", job.recipient, job.message_id, rcpt.status, reply)
    )
    b.effects.append(Effect(item.inbound_id, job.id, "delivered", job.recipient, rcpt.status))


def _reply(rcpt: Recipient) -> str | None:
    """The remote server's reply: code, enhanced status and text, each once (most diagnostics
    already start with the code and status: ``smtp; 421 4.7.0 Try again later``)."""
    text = rcpt.diagnostic or ""
    head = text.split(maxsplit=2)[:2]
    parts = [x for x in (rcpt.reply_code, rcpt.status) if x and x not in head]
    return " ".join([*parts, text] if text else parts) or None


def _unverified_kind(kind: BounceKind) -> str:
    return "complaint" if kind is BounceKind.ARF else "bounce"


def _unverified(item: InboundItem, job: Job, b: _Batch) -> None:
    """A report naming a job it did not prove: an event for the tenant, nothing else."""
    report = item.report
    what = _unverified_kind(report.kind)
    metrics.INBOUND_UNVERIFIED.labels(what).inc()
    if report.kind is BounceKind.ARF:
        reason: str | None = feedback_label(report.feedback_type)
        reply = None
    else:
        rcpt = failed_line(report.recipients, job)
        if rcpt is None:  # a delay notice or nothing about this address: nothing to say
            b.effects.append(Effect(item.inbound_id, job.id, "ignored"))
            return
        reason, reply = rcpt.reason.value, _reply(rcpt)
    b.events.append(
        (
            job.tenant_id,
            job.id,
            _UNVERIFIED_EVENT[what],
            job.recipient,
            job.message_id,
            reason,
            reply,
        )
    )
    b.effects.append(Effect(item.inbound_id, job.id, f"unverified_{what}", job.recipient, reason))


def _bounce_signal(job: Job, kind: SignalKind, rcpt: Recipient) -> DeliverySignal:
    return DeliverySignal(
        job.tenant_id,
        job.sender,
        "",
        kind,
        reply_code=_int(rcpt.reply_code),
        enhanced_status=rcpt.status,
        attempt=False,
    )


def _delay_signal(job: Job, rcpt: Recipient) -> DeliverySignal:
    """A delay notice is the provider deferring the mail at the relay: ``throttled`` for 421 or
    4.7.x (the provider asks to slow down), else ``deferred``; never an attempt of its own."""
    code = _int(rcpt.reply_code)
    status = rcpt.status or ""
    throttled = code == ReplyCode.SERVICE_UNAVAILABLE or status.startswith(_THROTTLE_CLASS)
    return DeliverySignal(
        job.tenant_id,
        job.sender,
        "",
        SignalKind.THROTTLED if throttled else SignalKind.DEFERRED,
        reply_code=code,
        enhanced_status=rcpt.status,
        attempt=False,
    )


def _int(code: str | None) -> int | None:
    return int(code) if code and code.isascii() and code.isdigit() else None


class EffectsConfig(msgspec.Struct, frozen=True):
    soft_bounce_limit: int = 3
    soft_bounce_window_days: int = 7
    soft_bounce_suppress_days: int = 30
    # The olap tier on another server: counts go to queue.olap_outbox (engine/olap_drain.py).
    olap_outbox: bool = False


async def apply(
    pool: asyncpg.Pool,
    items: Sequence[InboundItem],
    cfg: EffectsConfig | None = None,
    shaping: SignalSink | None = None,
    *,
    trust: InboundTrust | None = None,
    content: asyncpg.Pool | None = None,
) -> list[Effect]:
    """Apply a batch of parsed inbound messages in one transaction; returns what changed.

    ``trust`` assesses what each report proves (see the module doc); without it only a valid
    VERP address proves anything (no complaint acts). ``content``: the content tier's pool when
    it lives on another server: the raw messages are then marked processed after the effects
    commit (a crash in between parses them again, and ``oltp.inbound_counted`` makes that a
    replay that counts nothing).
    """
    if not items:
        return []
    cfg = cfg or EffectsConfig()
    content_apart = apart(content, pool)
    # Before the transaction: reporter authentication may wait for DNS.
    checks = await trust.assess_all(items) if trust is not None else [Assessment()] * len(items)
    async with pool.acquire() as conn:
        jobs = await jobs_named(conn, items, checks)
        by_mid = by_message_id(jobs)
        matches = [
            await _by_feedback_id(conn, item, check, match_report(item, check, jobs, by_mid))
            for item, check in zip(items, checks, strict=True)
        ]
        successes = [
            item.inbound_id
            for item, m in zip(items, matches, strict=True)
            if m.job is not None
            and m.proven
            and any((r.action or "").lower() in _SUCCEEDED for r in item.report.recipients)
        ]
        raw_db = content_apart or conn
        arrived = await inbound_store.received_at(raw_db, successes) if successes else {}
    items, matches, waited = _hold_sending(items, matches)
    if not items:
        return waited
    # Outside the transaction (and without a connection held): the lookup may wait for DNS.
    b = _Batch(await _provider_names(shaping, {m.job.domain for m in matches if m.job}), arrived)
    async with pool.acquire() as conn, conn.transaction():
        keys = [
            (m.job.tenant_id, m.job.id, klass, item.inbound_id)
            for item, m in zip(items, matches, strict=True)
            if m.job is not None and (klass := _class_of(item, m)) is not None
        ]
        fresh = await trust_store.claim(conn, keys)
        for item, m in zip(items, matches, strict=True):
            klass = _class_of(item, m)
            replay = False
            if klass is not None and m.job is not None:
                replay = (m.job.id, klass) not in fresh
                fresh.discard((m.job.id, klass))  # a duplicate in this batch is a replay too
            _apply_one(item, m, b, replay)
        if b.states:
            await effects_store.set_job_states(conn, b.states)
        if b.events:
            await _events(conn, b.events, b.data)
        if b.soft:
            b.suppress.extend(await _soft_over_limit(conn, b.soft, cfg))
        await suppression_store.add(conn, b.suppress)
        if cfg.olap_outbox:
            await olap_outbox.put(conn, b.stats, b.facts, b.latencies)
        else:
            await stats.add(conn, b.stats)
            await facts.add(conn, b.facts, b.latencies)
        none = (None, None, None, None)
        details = [b.details.get(p[0], none) for p in b.processed]
        if content_apart is None:
            await effects_store.mark_processed(conn, b.processed, details)
    if content_apart is not None:
        await effects_store.mark_processed(content_apart, b.processed, details)
    if shaping is not None and b.signals:
        _signal(shaping, b.signals, b.providers)
    return b.effects + waited


def _hold_sending(
    items: Sequence[InboundItem], matches: Sequence[Match]
) -> tuple[list[InboundItem], list[Match], list[Effect]]:
    """Set aside the reports about a job whose relay outcome is not written yet.

    A report can outrun the relay outcome it follows (a provider's DSN back through the node
    before the outcome writer's flush): applied now, the job's "relayed" event, relay fields
    and send day would be lost (the outcome only lands on a job still 'sending'). It stays
    unprocessed and the listener's sweep brings it back; the lease bounds the wait.
    """
    held = {i for i, m in enumerate(matches) if m.job is not None and m.job.sending}
    if not held:
        return list(items), list(matches), []
    metrics.INBOUND_WAITING.inc(len(held))
    waited = [
        Effect(items[i].inbound_id, m.job.id if m.job else None, "waiting")
        for i, m in enumerate(matches)
        if i in held
    ]
    kept = [i for i in range(len(items)) if i not in held]
    return [items[i] for i in kept], [matches[i] for i in kept], waited


async def _by_feedback_id(conn: Any, item: InboundItem, check: Assessment, match: Match) -> Match:
    """A reporter-authenticated complaint about a redacted original: find the job through our
    Feedback-ID header (tenant, sender domain, campaign) and the reported recipient."""
    if match.job is not None or check.reporter is None or item.report.kind is not BounceKind.ARF:
        return match
    fid = item.evidence.feedback_id
    parts = fid.split(":") if fid else []
    recipients = [r.address for r in item.report.recipients]
    if len(parts) != 4 or parts[3] != "pm" or len(recipients) != 1:
        return match
    campaign, tenant, domain = parts[0], parts[1], parts[2]
    job_id = await trust_store.job_by_feedback_id(
        conn, tenant, domain, None if campaign == "-" else campaign, recipients[0]
    )
    if job_id is None:
        return match
    row = await effects_store.job_by_id(conn, job_id)
    if row is None:
        return match
    return Match(job_from_row(row), True)


async def _provider_names(shaping: SignalSink | None, domains: set[str]) -> dict[str, str]:
    """Recipient domain -> provider name, by the shaper's cached MX rollup (the send path's).

    Empty without shaping, or when the lookup fails (logged): the outcomes are then counted
    with provider ``''`` and the batch applies all the same.
    """
    if shaping is None or not domains:
        return {}
    try:
        found = await shaping.resolve_providers(domains)
    except Exception as exc:  # the provider only labels the outcome; never fail the batch for it
        log.warning(
            "provider lookup for inbound outcomes failed; counted without provider",
            extra={"error": str(exc), "domains": len(domains)},
        )
        return {}
    return {d: name for d, p in found.items() if (name := getattr(p, "name", None))}


def _signal(
    shaping: SignalSink,
    signals: Sequence[tuple[DeliverySignal, str]],
    providers: Mapping[str, str],
) -> None:
    """Feed shaping, naming each signal's receiving provider (the domain when unresolved)."""
    for sig, domain in signals:
        shaping.record(msgspec.structs.replace(sig, provider=providers.get(domain) or domain))


async def _events(conn: Any, rows: Sequence[tuple[Any, ...]], data: Mapping[int, str]) -> None:
    await effects_store.insert_events(
        conn, rows, [data.get(r[1]) if r[1] is not None else None for r in rows]
    )


async def _soft_over_limit(
    conn: Any, pairs: Sequence[tuple[str, str]], cfg: EffectsConfig
) -> list[tuple[str, str, str, str, float | None]]:
    """Addresses whose soft bounces in the window reached the limit (this batch included)."""
    over = await effects_store.soft_bounced_over(
        conn, pairs, cfg.soft_bounce_window_days, cfg.soft_bounce_limit
    )
    ttl = cfg.soft_bounce_suppress_days * 86400.0
    return [(t, a, "soft_bounce_limit", "bounce", ttl) for t, a in over]
