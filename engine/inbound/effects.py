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
from engine.inbound.evidence import Evidence
from engine.inbound.report import BounceKind, BounceReport, Recipient
from engine.inbound.trust import Assessment, InboundTrust, aligned
from engine.shaping.model import DeliverySignal, SignalKind
from engine.shaping.signals import ReplyCode
from engine.store import facts, stats
from engine.store import inbound as inbound_store
from engine.store import inbound_trust as trust_store
from engine.store import suppressions as suppression_store

log = logging.getLogger("engine.inbound")

#: RFC 3464 Action values that are not failures. ``delayed`` is a warning from an MTA that is
#: still retrying (Postfix's delay_warning_time): the job may yet be delivered, so it is a
#: provider signal and an event, never a bounce.
_NOT_FAILED = {"delivered", "relayed", "expanded", "delayed"}
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
    # bounced_hard | bounced_soft | complained | not_spam | auth_failure | autoreply | delayed |
    # delivered | ignored | unverified_complaint | unverified_bounce | replayed
    kind: str
    address: str | None = None
    reason: str | None = None


class _Job(msgspec.Struct, frozen=True):
    id: int
    tenant_id: str
    sender: str
    recipient: str
    message_id: str | None
    relay_node: str | None = None  # the node that relayed it (queue.jobs.relay_node)
    created_at: float | None = None  # enqueued at (Unix seconds)
    campaign_id: str | None = None
    provider: str | None = None  # the provider the send path shaped it for (queue.jobs)
    relayed_at: float | None = None  # first relayed (Unix seconds): its send day

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower().rstrip(".")


_JOB_COLUMNS = (
    "id, tenant_id, sender, recipient, message_id, relay_node,"
    " extract(epoch FROM created_at)::float8 AS created, campaign_id, provider,"
    " extract(epoch FROM relayed_at)::float8 AS relayed"
)
_J_COLUMNS = (
    "j.id, j.tenant_id, j.sender, j.recipient, j.message_id, j.relay_node, j.created,"
    " j.campaign_id, j.provider, j.relayed"
)


def _job(r: Any) -> _Job:
    return _Job(
        r["id"],
        r["tenant_id"],
        r["sender"],
        r["recipient"],
        r["message_id"],
        r["relay_node"],
        r["created"],
        r["campaign_id"],
        r["provider"],
        r["relayed"],
    )


#: Feedback types a metric label may take (an attacker chooses the field's text).
_FEEDBACK_LABELS = frozenset(t.value for t in FeedbackType)
_BOUNCE_KINDS = (BounceKind.DSN, BounceKind.NONSTANDARD)
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


async def _jobs(
    conn: Any, items: Sequence[InboundItem], checks: Sequence[Assessment]
) -> dict[int, _Job]:
    """The jobs the batch names: by id; by Message-ID at most two each (one tells the job, two
    say that the Message-ID is shared and names none); and, for our signatures, every job of the
    signed Message-ID and signed To (which tells the job of a shared Message-ID)."""
    ids: set[int] = set()
    mids: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for item, check in zip(items, checks, strict=True):
        ids.update(j for j in (item.verp_job_id, check.envid_job, check.return_path_job) if j)
        for proof in check.own:
            mids.add(proof.message_id)
            pairs.update((proof.message_id, to) for to in proof.to)
        if item.report.hints.message_id:
            mids.add(item.report.hints.message_id)
    if not ids and not mids:
        return {}
    rows = await conn.fetch(
        f"SELECT {_JOB_COLUMNS} FROM queue.jobs"
        " WHERE id = ANY($1::bigint[])"
        f" UNION SELECT {_J_COLUMNS} FROM unnest($2::text[]) AS m(mid) CROSS JOIN LATERAL"
        f" (SELECT {_JOB_COLUMNS} FROM queue.jobs"
        "  WHERE message_id = m.mid LIMIT 2) j"
        f" UNION SELECT {_J_COLUMNS} FROM unnest($3::text[], $4::text[]) AS p(mid, rcpt)"
        f" CROSS JOIN LATERAL (SELECT {_JOB_COLUMNS} FROM queue.jobs q"
        "  WHERE q.message_id = p.mid AND lower(q.recipient) = p.rcpt) j",
        list(ids),
        list(mids),
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {r["id"]: _job(r) for r in rows}


def _by_mid(jobs: dict[int, _Job]) -> dict[str, list[_Job]]:
    by_mid: dict[str, list[_Job]] = {}
    for job in jobs.values():
        if job.message_id:
            by_mid.setdefault(job.message_id, []).append(job)
    return by_mid


class _Match(msgspec.Struct, frozen=True):
    """The job a report names, and whether the report proved it."""

    job: _Job | None
    proven: bool = False


def _own_job(check: Assessment, by_mid: dict[str, list[_Job]]) -> _Job | None:
    """The job our verified signature names: its tenant owns the key, its domain aligns; of a
    Message-ID several jobs share, the one the signed To names."""
    for proof in check.own:
        found = by_mid.get(proof.message_id, [])
        if len(found) > 1:
            found = [j for j in found if j.recipient.lower() in proof.to]
        found = [
            j
            for j in found
            if (proof.tenant_id is None or proof.tenant_id == j.tenant_id)
            and aligned(j.sender.rpartition("@")[2], proof.domain)
        ]
        if len(found) == 1:
            return found[0]
    return None


def _match(
    item: InboundItem, check: Assessment, jobs: dict[int, _Job], by_mid: dict[str, list[_Job]]
) -> _Match:
    mid = item.report.hints.message_id
    named = by_mid.get(mid, []) if mid else []
    # Unproven (anyone can write a Message-ID), and none when several jobs share it.
    claimed = named[0] if len(named) == 1 else None
    kind = item.report.kind
    if kind is BounceKind.ARF:
        own = _own_job(check, by_mid)
        if own is not None:
            return _Match(own, True)
        if check.reporter is not None:
            for job_id in (item.verp_job_id, check.return_path_job):
                if job_id and job_id in jobs:
                    return _Match(jobs[job_id], True)
            # A reporter that is also a mailbox provider signs what its users send too, and our
            # Message-IDs are predictable: one names a job only with the job's recipient.
            reported = {r.address.lower() for r in item.report.recipients}
            if claimed is not None and claimed.recipient.lower() in reported:
                return _Match(claimed, True)
            return _Match(None, True)  # a genuine report, naming no job it proves
        verp_job = jobs.get(item.verp_job_id) if item.verp_job_id else None
        return _Match(verp_job or claimed)
    if item.verp_job_id:
        return _Match(jobs.get(item.verp_job_id), True)
    if kind in _BOUNCE_KINDS:
        if check.envid_job is not None and check.envid_job in jobs:
            return _Match(jobs[check.envid_job], True)
        own = _own_job(check, by_mid)
        if own is not None:
            return _Match(own, True)
    return _Match(claimed)


def _failed(recipients: Sequence[Recipient], job: _Job) -> Recipient | None:
    """The failed recipient line about this job's address (or the only one, if forwarded or
    rewritten)."""
    return _about_job(
        [r for r in recipients if (r.action or "failed").lower() not in _NOT_FAILED], job
    )


def _about_job(lines: Sequence[Recipient], job: _Job) -> Recipient | None:
    """The line naming this job's address, or the only line (forwarded/rewritten address)."""
    for r in lines:
        if r.address.lower() == job.recipient.lower():
            return r
    return lines[0] if len(lines) == 1 else None


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

    def provider(self, job: _Job) -> str:
        """The job's provider: the one it was sent to, else its recipient domain's MX rollup."""
        return job.provider or self.providers.get(job.domain, "")

    def fact(self, job: _Job, outcome: str, reason: str | None = None) -> None:
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

    def key(self, job: _Job) -> tuple[str, str, str]:
        """The daily_stats key of a job's outcome: (tenant, sender, provider)."""
        return (job.tenant_id, job.sender, self.provider(job))

    def note(self, job: _Job, **extra: Any) -> None:
        """What every event about ``job`` carries in ``data``: sender, provider, relay node,
        and ``extra`` (set only for the one event of the job that has them)."""
        data: dict[str, Any] = {"sender": job.sender}
        if provider := self.provider(job):
            data["provider"] = provider
        if job.relay_node:
            data["node"] = job.relay_node
        data.update((k, v) for k, v in extra.items() if v is not None)
        self.data[job.id] = msgspec.json.encode(data).decode()


def _class_of(item: InboundItem, match: _Match) -> str | None:
    """The replay class (complaint | hard | soft) of a proven report that would count."""
    job, report = match.job, item.report
    if job is None or not match.proven:
        return None
    if report.kind is BounceKind.ARF:
        return None if feedback_label(report.feedback_type) in _NOT_COMPLAINTS else "complaint"
    if report.kind in _BOUNCE_KINDS:
        rcpt = _failed(report.recipients, job)
        if rcpt is not None:
            return "hard" if rcpt.hard else "soft"
    return None


def _apply_one(item: InboundItem, match: _Match, b: _Batch, replay: bool) -> None:
    report = item.report
    kind = report.kind
    job = match.job
    if job is None:
        if not match.proven and kind in (BounceKind.ARF, *_BOUNCE_KINDS):
            metrics.INBOUND_UNVERIFIED.labels(_unverified_kind(kind)).inc()
        b.processed.append((item.inbound_id, None, None, kind.value))
        b.effects.append(Effect(item.inbound_id, None, "ignored"))
        return
    tenant, key, domain = job.tenant_id, b.key(job), job.domain
    b.note(job)
    b.processed.append((item.inbound_id, job.id, tenant, kind.value))
    if kind in (BounceKind.ARF, *_BOUNCE_KINDS) and not match.proven:
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
    if kind not in _BOUNCE_KINDS:
        b.effects.append(Effect(item.inbound_id, job.id, "ignored"))
        return
    _bounce(item, job, b)


def _bounce(item: InboundItem, job: _Job, b: _Batch) -> None:
    report = item.report
    tenant, key, domain = job.tenant_id, b.key(job), job.domain
    rcpt = _failed(report.recipients, job)
    if rcpt is None:
        done = _about_job(
            [r for r in report.recipients if (r.action or "").lower() in _SUCCEEDED], job
        )
        if done is not None:
            _delivered(item, job, done, b)
            return
        delay = _about_job(
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


def _delivered(item: InboundItem, job: _Job, rcpt: Recipient, b: _Batch) -> None:
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


def _unverified(item: InboundItem, job: _Job, b: _Batch) -> None:
    """A report naming a job it did not prove: an event for the tenant, nothing else."""
    report = item.report
    what = _unverified_kind(report.kind)
    metrics.INBOUND_UNVERIFIED.labels(what).inc()
    if report.kind is BounceKind.ARF:
        reason: str | None = feedback_label(report.feedback_type)
        reply = None
    else:
        rcpt = _failed(report.recipients, job)
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


def _delay_signal(job: _Job, rcpt: Recipient) -> DeliverySignal:
    """A delay notice is the provider deferring the mail at the relay: ``throttled`` for 421 or
    4.7.x (the provider asks to slow down), else ``deferred``; never an attempt of its own."""
    code = _int(rcpt.reply_code)
    status = rcpt.status or ""
    throttled = code == ReplyCode.SERVICE_NOT_AVAILABLE or status.startswith(_THROTTLE_CLASS)
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


async def apply(
    pool: asyncpg.Pool,
    items: Sequence[InboundItem],
    cfg: EffectsConfig | None = None,
    shaping: SignalSink | None = None,
    *,
    trust: InboundTrust | None = None,
) -> list[Effect]:
    """Apply a batch of parsed inbound messages in one transaction; returns what changed.

    ``trust`` assesses what each report proves (see the module doc); without it only a valid
    VERP address proves anything (no complaint acts).
    """
    if not items:
        return []
    cfg = cfg or EffectsConfig()
    # Before the transaction: reporter authentication may wait for DNS.
    checks = await trust.assess_all(items) if trust is not None else [Assessment()] * len(items)
    async with pool.acquire() as conn:
        jobs = await _jobs(conn, items, checks)
        by_mid = _by_mid(jobs)
        matches = [
            await _by_feedback_id(conn, item, check, _match(item, check, jobs, by_mid))
            for item, check in zip(items, checks, strict=True)
        ]
        successes = [
            item.inbound_id
            for item, m in zip(items, matches, strict=True)
            if m.job is not None
            and m.proven
            and any((r.action or "").lower() in _SUCCEEDED for r in item.report.recipients)
        ]
        arrived = await inbound_store.received_at(conn, successes) if successes else {}
    # Outside the transaction (and without a connection held): the lookup may wait for DNS.
    b = _Batch(await _provider_names(shaping, {m.job.domain for m in matches if m.job}), arrived)
    async with pool.acquire() as conn, conn.transaction():
        keys = [
            (m.job.id, klass, item.inbound_id)
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
            await _events(conn, b.events, b.data)
        if b.soft:
            b.suppress.extend(await _soft_over_limit(conn, b.soft, cfg))
        await suppression_store.add(conn, b.suppress)
        await stats.add(conn, b.stats)
        await facts.add(conn, b.facts, b.latencies)
        none = (None, None, None, None)
        details = [b.details.get(p[0], none) for p in b.processed]
        await conn.execute(
            "UPDATE content.inbound_messages m SET processed_at = now(), job_id = u.job,"
            " tenant_id = u.t, kind = u.k, dsn_status = u.st, dsn_diagnostic = u.diag,"
            " remote_mta = u.mta, reason = u.why"
            " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::text[], $8::text[]) AS u(id, job, t, k, st, diag, mta, why)"
            " WHERE m.id = u.id",
            [p[0] for p in b.processed],
            [p[1] for p in b.processed],
            [p[2] for p in b.processed],
            [p[3] for p in b.processed],
            [d[0] for d in details],
            [d[1] for d in details],
            [d[2] for d in details],
            [d[3] for d in details],
        )
    if shaping is not None and b.signals:
        _signal(shaping, b.signals, b.providers)
    return b.effects


async def _by_feedback_id(conn: Any, item: InboundItem, check: Assessment, match: _Match) -> _Match:
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
    row = await conn.fetchrow(f"SELECT {_JOB_COLUMNS} FROM queue.jobs WHERE id = $1", job_id)
    if row is None:
        return match
    return _Match(_job(row), True)


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
    await conn.execute(
        "INSERT INTO oltp.events"
        " (tenant_id, job_id, kind, recipient, message_id, reason, reply, data)"
        " SELECT t, j, k, r, m, re, rp, d::jsonb FROM unnest($1::text[], $2::bigint[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
        " AS u(t, j, k, r, m, re, rp, d)",
        *[[r[i] for r in rows] for i in range(7)],
        [data.get(r[1]) if r[1] is not None else None for r in rows],
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
        # Distinct jobs: a job's soft bounce counts once however often it is replayed.
        " GROUP BY e.tenant_id, e.recipient HAVING count(DISTINCT e.job_id) >= $4",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        cfg.soft_bounce_window_days,
        cfg.soft_bounce_limit,
    )
    ttl = cfg.soft_bounce_suppress_days * 86400.0
    return [(r["tenant_id"], r["recipient"], "soft_bounce_limit", "bounce", ttl) for r in rows]
