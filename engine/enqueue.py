"""The enqueue service: validate jobs, store content once, insert jobs idempotently, wake feeders.

Shared by ``engine enqueue``, ``POST /v1/messages`` and :mod:`engine.client`. Bad jobs get a
per-job error and the rest of the batch still goes in; a batch is a handful of round trips per
chunk of jobs (never one per job). The daemon's feeder is woken with NOTIFY at commit and moves
due jobs onto the Redis streams (DESIGN §3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import asyncpg
import msgspec

from engine import events, metrics
from engine.compose.address import parse_address
from engine.compose.template import missing_variables
from engine.compose.validate import RawTrace, validate_job
from engine.errors import JobValidationError
from engine.model import Content, Job, Priority
from engine.psl import parent_domains
from engine.store import campaigns as campaign_store
from engine.store import content as content_store
from engine.store import domains as domain_store
from engine.store import jobs as job_store
from engine.store import senders as sender_store
from engine.store import tenants
from engine.store.notify import wake_feeder
from engine.store.pool import Conn, apart, transaction
from engine.tenancy.rules import claimed_domains, sender_error

CHUNK = 5000

_JOB_DECODER = msgspec.json.Decoder(Job)
_KEY_ENCODER = msgspec.msgpack.Encoder()


class EnqueueResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one submitted job (``index`` is its 0-based position in the batch)."""

    index: int
    idempotency_key: str | None
    job_id: int | None = None
    created: bool = False
    error: str | None = None


def decode_job(data: bytes | str) -> Job:
    """Decode one Job JSON object, turning schema errors into :class:`JobValidationError`."""
    try:
        return _JOB_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise JobValidationError(f"invalid job: {exc}") from None
    except msgspec.DecodeError as exc:
        raise JobValidationError(f"not a JSON object: {exc}") from None
    except RecursionError:  # msgspec's own depth guard: bounded work, nothing half-decoded
        raise JobValidationError("invalid job: JSON nested too deeply") from None


def _idempotency_key_of(data: bytes | str) -> str | None:
    try:
        doc = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    key = doc.get("idempotency_key") if isinstance(doc, dict) else None
    return key if isinstance(key, str) else None


def _parse_send_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise JobValidationError(f"send_at {value!r} is not an ISO 8601 timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def content_of(job: Job) -> Content:
    """The part of a job shared by every recipient (stored once per hash)."""
    return Content(
        from_=job.from_,
        subject=job.subject,
        text=job.text,
        html=job.html,
        headers=job.headers,
        attachments=job.attachments,
        raw=job.raw,
        list_unsubscribe=job.list_unsubscribe,
    )


def _check(job: Job, max_message_bytes: int, raw_trace: RawTrace) -> job_store.NewJob:
    validate_job(job, max_message_bytes=max_message_bytes, raw_trace=raw_trace)
    if not job.from_:
        raise JobValidationError("from is required (the sender address the job is sent as)")
    return job_store.NewJob(
        tenant_id=job.tenant_id,
        idempotency_key=job.idempotency_key,
        priority=int(Priority.parse(job.priority)),
        sender=parse_address(job.from_).addr_spec,
        recipient=job.to,
        content_sha256=b"",
        campaign_id=job.campaign_id,
        metadata=job.metadata or None,
        send_at=_parse_send_at(job.send_at),
        variables=job.variables,
    )


async def enqueue(
    pool: asyncpg.Pool,
    jobs: Sequence[Job | bytes | str],
    *,
    max_message_bytes: int,
    max_age_s: float,
    raw_trace: RawTrace = "refuse",
    enforce_domains: bool = False,
    only_tenant: str | None = None,
    content_pool: asyncpg.Pool | None = None,
) -> list[EnqueueResult]:
    """Enqueue a batch; returns one result per input, in order.

    Inputs may be decoded :class:`Job` structs or raw JSON (decoded here, so a malformed line
    becomes that line's error). ``raw_trace`` is ``[security] raw_trace_headers``;
    ``enforce_domains`` is ``[security] enforce_sender_domains`` (off: only tenants that
    registered a sending domain are held to theirs). ``only_tenant`` (a tenant API key's
    tenant) refuses a job of any other tenant with the very error an unknown tenant gets, so
    nothing is learnt about others. ``content_pool``: the content tier's pool when it lives on
    another server: the contents are then stored there in their own transaction, committed
    before the jobs (content stored for a batch that then fails is an orphan the retention
    sweep removes), and the campaign templates are read there.
    """
    content_apart = apart(content_pool, pool)
    results: list[EnqueueResult] = []
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start : start + CHUNK]
        results.extend(
            await _enqueue_chunk(
                pool,
                chunk,
                start,
                max_message_bytes,
                max_age_s,
                raw_trace,
                enforce_domains,
                only_tenant,
                content_apart,
            )
        )
    # Accepted jobs are counted where they commit (engine/queue/tally.py), for every path.
    accepted = sum(1 for r in results if r.job_id is not None)
    metrics.ENQUEUE_REJECTED.inc(len(results) - accepted)
    return results


async def _enqueue_chunk(
    pool: asyncpg.Pool,
    items: Sequence[Job | bytes | str],
    offset: int,
    max_message_bytes: int,
    max_age_s: float,
    raw_trace: RawTrace,
    enforce_domains: bool,
    only_tenant: str | None,
    content_pool: asyncpg.Pool | None = None,
) -> list[EnqueueResult]:
    results: dict[int, EnqueueResult] = {}
    accepted: list[tuple[int, Job, job_store.NewJob]] = []
    for i, item in enumerate(items, start=offset):
        key = item.idempotency_key if isinstance(item, Job) else _idempotency_key_of(item)
        try:
            job = item if isinstance(item, Job) else decode_job(item)
            accepted.append((i, job, _check(job, max_message_bytes, raw_trace)))
        except JobValidationError as exc:
            results[i] = EnqueueResult(i, key, error=str(exc))
    if accepted:
        async with pool.acquire() as conn, conn.transaction():
            known = await tenants.known(conn, (j.tenant_id for _, j, _ in accepted))
            refused = await _domain_errors(conn, accepted, enforce_domains)
            tdb = conn if content_pool is None else content_pool
            versions = await _template_versions(tdb, accepted, refused)
            if only_tenant is not None:
                known &= {only_tenant}
            ready: list[tuple[int, job_store.NewJob]] = []
            encoded: dict[bytes, content_store.EncodedContent] = {}
            to_store: dict[tuple[str, bytes], content_store.EncodedContent] = {}
            for i, job, new in accepted:
                if job.tenant_id not in known:
                    results[i] = EnqueueResult(
                        i,
                        job.idempotency_key,
                        error=f"unknown tenant {job.tenant_id!r}"
                        f" (add it with: engine tenants add {job.tenant_id})",
                    )
                    continue
                if i in refused:
                    results[i] = EnqueueResult(i, job.idempotency_key, error=refused[i])
                    continue
                if job.variables is not None:
                    new = msgspec.structs.replace(new, template_version=versions[i])
                content = content_of(job)
                ckey = _KEY_ENCODER.encode(content)
                enc = encoded.get(ckey)
                if enc is None:
                    enc = encoded[ckey] = content_store.encode(content)
                to_store[(job.tenant_id, enc.sha256)] = enc
                ready.append((i, msgspec.structs.replace(new, content_sha256=enc.sha256)))
            await _store_contents(conn, content_pool, to_store)
            await _ensure_senders(conn, {(n.tenant_id, n.sender) for _, n in ready})
            inserted = await job_store.insert(conn, [n for _, n in ready], max_age_s=max_age_s)
            for (i, _), ins in zip(ready, inserted, strict=True):
                results[i] = EnqueueResult(i, ins.idempotency_key, ins.job_id, ins.created)
            await events.write(
                conn,
                [
                    events.Event(
                        tenant_id=n.tenant_id,
                        kind=events.EventKind.QUEUED.value,
                        job_id=ins.job_id,
                        recipient=n.recipient,
                    )
                    for (_, n), ins in zip(ready, inserted, strict=True)
                    if ins.created
                ],
            )
            if any(ins.created for ins in inserted):
                await wake_feeder(conn)
    return [results[i] for i in range(offset, offset + len(items))]


async def _store_contents(
    conn: Conn,
    content_pool: asyncpg.Pool | None,
    to_store: dict[tuple[str, bytes], content_store.EncodedContent],
) -> None:
    """The batch's contents: in the enqueue's transaction, or (``content_pool``: the content
    tier on another server) in their own one there, committed before the jobs."""
    tenant_ids, items = [k[0] for k in to_store], list(to_store.values())
    if content_pool is None:
        await content_store.store(conn, tenant_ids, items)
        return
    async with transaction(content_pool) as stored:
        await content_store.store(stored, tenant_ids, items, touch=True)


async def _domain_errors(
    conn: Conn, accepted: Sequence[tuple[int, Job, job_store.NewJob]], enforce: bool
) -> dict[int, str]:
    """Per job index, why its tenant may not send as one of the domains it claims."""
    claims = {i: claimed_domains(job) for i, job, _ in accepted}
    names = {p for found in claims.values() for _, d in found for p in parent_domains(d)}
    owners = await domain_store.verified_owners(conn, names)
    registered = await domain_store.with_domains(conn, (j.tenant_id for _, j, _ in accepted))
    errors: dict[int, str] = {}
    for i, job, _ in accepted:
        for what, domain in claims[i]:
            why = sender_error(
                job.tenant_id,
                domain,
                owners,
                job.tenant_id in registered,
                enforce=enforce,
                what=what,
            )
            if why is not None:
                errors[i] = why
                break
    return errors


async def _template_versions(
    conn: Conn | asyncpg.Pool,
    accepted: Sequence[tuple[int, Job, job_store.NewJob]],
    refused: dict[int, str],
) -> dict[int, int]:
    """Per templated job index, the campaign version it will render; a job whose campaign has
    no template, or whose variables miss a name the template needs, goes into ``refused``."""
    templated = [(i, job) for i, job, _ in accepted if job.variables is not None]
    found = await campaign_store.current_many(
        conn, ((job.tenant_id, job.campaign_id or "") for _, job in templated)
    )
    versions: dict[int, int] = {}
    for i, job in templated:
        current = found.get((job.tenant_id, job.campaign_id or ""))
        if current is None:
            refused.setdefault(
                i,
                f"campaign_id: no template stored for campaign {job.campaign_id!r}"
                f" (PUT /v1/campaigns/{job.campaign_id} or engine campaigns set first)",
            )
            continue
        version, required = current
        missing = missing_variables(required, job.variables or {})
        if missing:
            refused.setdefault(
                i,
                f"variables: missing {', '.join(missing)} used by campaign"
                f" {job.campaign_id!r} version {version}",
            )
            continue
        versions[i] = version
    return versions


async def _ensure_senders(conn: Conn, senders: Iterable[tuple[str, str]]) -> None:
    """Senders are created on first use (and so start their warm-up plan)."""
    pairs = sorted(senders)
    if not pairs:
        return
    await sender_store.ensure(conn, pairs)
