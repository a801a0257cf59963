"""Where is message X, and why is it late: one job's record and every event about it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Mapping
from typing import TypeVar

import asyncpg
import msgspec

from engine.compose.message_id import make as make_message_id
from engine.compose.mime import build_body, effective_message_id, render
from engine.compose.template import CompiledTemplate, TemplateSource
from engine.model import Content
from engine.store import campaigns as campaign_store
from engine.store import content as content_store
from engine.store import messages as message_store
from engine.store.messages import MessageView, TimelineEvent
from engine.store.pool import Conn, Tiers

K = TypeVar("K")
V = TypeVar("V")


class Timeline(msgspec.Struct, frozen=True):
    """DESIGN §8 ``engine messages show --json``: ``{"job": {...}, "events": [{"kind", "at",
    ...}]}``, events oldest first; unknown kinds are kept as they are."""

    job: MessageView
    events: list[TimelineEvent]


class SearchFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Every given field must match; ``since``/``until`` bound ``created_at`` (until excluded)."""

    tenant_id: str | None = None
    campaign_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    state: str | None = None
    priority: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class SearchPage(msgspec.Struct, frozen=True):
    """A page of jobs, newest first; pass ``next`` as the cursor of the next page (None: last)."""

    messages: list[MessageView]
    next: int | None


async def show(
    pool: asyncpg.Pool | Conn, job_id: int, tenant_id: str | None = None
) -> Timeline | None:
    """The job and its timeline (None: no such job, or not of ``tenant_id``)."""
    job = await message_store.get(pool, job_id, tenant_id)
    if job is None:
        return None
    return Timeline(job=job, events=await message_store.timeline(pool, job_id, job.tenant_id))


async def search(
    pool: asyncpg.Pool | Conn, flt: SearchFilter, *, limit: int = 100, after: int | None = None
) -> SearchPage:
    """Jobs matching ``flt``, newest first, keyset-paginated on the job id (``after``: the
    ``next`` of the previous page), so every page costs the same."""
    found = await message_store.search(
        pool, **msgspec.structs.asdict(flt), limit=limit, before_id=after
    )
    return SearchPage(messages=found, next=found[-1].id if len(found) == limit else None)


async def _rendered(
    pool: asyncpg.Pool, job: MessageView, base: Content, tiers: Tiers
) -> Content | None:
    """A templated job's content: its campaign's template version rendered with its variables
    (raises :class:`~engine.errors.TemplateError` when it cannot be, as the send did)."""
    found = await campaign_store.job_template(pool, job.id, job.tenant_id)
    if found is None:
        return None
    key = (job.tenant_id, *found[:2])
    stored = await tiers.read_content(
        lambda content: _one(campaign_store.load(content, [key]), key), missing=_none
    )
    if stored is None:
        return None
    compiled = CompiledTemplate(TemplateSource(stored.subject, stored.text, stored.html))
    out = compiled.render(found[2])
    return msgspec.structs.replace(base, subject=out.subject, text=out.text, html=out.html)


async def composed(
    pool: asyncpg.Pool, job: MessageView, tiers: Tiers | None = None
) -> bytes | None:
    """The message as the engine composes it for this job, from the content tier: headers and
    body as relayed, without the per-attempt additions (DKIM-Signature, VERP Return-Path,
    the engine's own List-Unsubscribe, Feedback-ID). None when the content is no longer stored
    (retention purges it, docs/compliance.md). ``tiers``: where the content tier lives (its
    replica serves these reads when it has the rows); default all on ``pool``'s server."""
    tiers = tiers or Tiers(pool)
    key = await message_store.content_key(pool, job.id, job.tenant_id)
    if key is None:
        return None
    ref = (job.tenant_id, key)
    content = await tiers.read_content(
        lambda c: _one(content_store.load(c, [ref]), ref), missing=_none
    )
    if content is None:
        return None
    if content.raw is None and content.text is None and content.html is None:
        content = await _rendered(pool, job, content, tiers)  # a templated job: its own body
        if content is None:
            return None
    body = build_body(content)
    domain = job.sender.rpartition("@")[2]
    mid = effective_message_id(
        body, job.message_id or make_message_id(job.id, job.tenant_id, domain)
    )
    return render(body, to=job.recipient, message_id=mid, date=None, extra_headers=[])


async def _one(loading: Awaitable[Mapping[K, V]], key: K) -> V | None:
    """The row of ``key`` in what ``loading`` loads (None: not there)."""
    return (await loading).get(key)


def _none(value: object) -> bool:
    return value is None
