"""Which job an inbound report is about, and whether the report proves it (DESIGN §7).

A bounce proves its job by a valid VERP address, our ENVID, or our own DKIM signature in the
quoted original; a complaint by our own signature or an authenticated feedback-loop reporter.
A Message-ID alone names a job without proving it (anyone can write one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from engine.inbound.evidence import Evidence
from engine.inbound.report import BounceKind, BounceReport, Recipient
from engine.inbound.trust import Assessment, aligned
from engine.store import inbound_effects as effects_store
from engine.store.pool import Conn

#: RFC 3464 Action values that are not failures. ``delayed`` is a warning from an MTA that is
#: still retrying (Postfix's delay_warning_time): the job may yet be delivered, so it is a
#: provider signal and an event, never a bounce.
_NOT_FAILED = {"delivered", "relayed", "expanded", "delayed"}
#: Report kinds that are bounces (a delivery-status report, or a non-standard notice).
BOUNCE_KINDS = (BounceKind.DSN, BounceKind.NONSTANDARD)


class InboundItem(msgspec.Struct, frozen=True):
    """One stored inbound message and what the listener knew when it accepted it."""

    inbound_id: int
    report: BounceReport
    verp_job_id: int | None = None
    fbl: bool = False
    peer: str = ""  # the connecting client's IP
    mail_from: str = ""  # the SMTP envelope sender
    evidence: Evidence = Evidence()


class Job(msgspec.Struct, frozen=True):
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
    # Claimed by a dispatcher whose relay outcome is not written yet (queue.jobs.state).
    sending: bool = False

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower().rstrip(".")


def job_from_row(r: Any) -> Job:
    return Job(
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
        r["sending"],
    )


async def jobs_named(
    conn: Conn, items: Sequence[InboundItem], checks: Sequence[Assessment]
) -> dict[int, Job]:
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
    rows = await effects_store.jobs_named(conn, list(ids), list(mids), list(pairs))
    return {r["id"]: job_from_row(r) for r in rows}


def by_message_id(jobs: dict[int, Job]) -> dict[str, list[Job]]:
    by_mid: dict[str, list[Job]] = {}
    for job in jobs.values():
        if job.message_id:
            by_mid.setdefault(job.message_id, []).append(job)
    return by_mid


class Match(msgspec.Struct, frozen=True):
    """The job a report names, and whether the report proved it."""

    job: Job | None
    proven: bool = False


def _own_job(check: Assessment, by_mid: dict[str, list[Job]]) -> Job | None:
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


def match_report(
    item: InboundItem, check: Assessment, jobs: dict[int, Job], by_mid: dict[str, list[Job]]
) -> Match:
    mid = item.report.hints.message_id
    named = by_mid.get(mid, []) if mid else []
    # Unproven (anyone can write a Message-ID), and none when several jobs share it.
    claimed = named[0] if len(named) == 1 else None
    kind = item.report.kind
    if kind is BounceKind.ARF:
        own = _own_job(check, by_mid)
        if own is not None:
            return Match(own, True)
        if check.reporter is not None:
            for job_id in (item.verp_job_id, check.return_path_job):
                if job_id and job_id in jobs:
                    return Match(jobs[job_id], True)
            # A reporter that is also a mailbox provider signs what its users send too, and our
            # Message-IDs are predictable: one names a job only with the job's recipient.
            reported = {r.address.lower() for r in item.report.recipients}
            if claimed is not None and claimed.recipient.lower() in reported:
                return Match(claimed, True)
            return Match(None, True)  # a genuine report, naming no job it proves
        verp_job = jobs.get(item.verp_job_id) if item.verp_job_id else None
        return Match(verp_job or claimed)
    if item.verp_job_id:
        return Match(jobs.get(item.verp_job_id), True)
    if kind in BOUNCE_KINDS:
        if check.envid_job is not None and check.envid_job in jobs:
            return Match(jobs[check.envid_job], True)
        own = _own_job(check, by_mid)
        if own is not None:
            return Match(own, True)
    return Match(claimed)


def failed_line(recipients: Sequence[Recipient], job: Job) -> Recipient | None:
    """The failed recipient line about this job's address (or the only one, if forwarded or
    rewritten)."""
    return line_about_job(
        [r for r in recipients if (r.action or "failed").lower() not in _NOT_FAILED], job
    )


def line_about_job(lines: Sequence[Recipient], job: Job) -> Recipient | None:
    """The line naming this job's address, or the only line (forwarded/rewritten address)."""
    for r in lines:
        if r.address.lower() == job.recipient.lower():
            return r
    return lines[0] if len(lines) == 1 else None
