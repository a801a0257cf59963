"""Retention per tier (``[retention]``): ``engine retention run`` and the daemon's daily task.

What goes, each rule on its own age (``0`` keeps that tier forever):

* content — bodies (``email_content`` + ``email_messages``) stored more than ``content_days``
  ago that no unfinished job (queued, deferred, sending) needs; then attachments older than that
  which no remaining body refers to. Content is deduplicated, so its age is that of its first
  use: a body re-used by a new campaign is kept until that campaign's jobs are finished;
* inbound — raw bounces and complaints received more than ``inbound_days`` ago
  (default ``[inbound] retention_days``);
* events — ``oltp.events`` rows older than ``events_days``;
* jobs — finished jobs (every state but queued, deferred, sending) finished more than
  ``jobs_days`` ago;
* audit — ``oltp.audit_log`` entries older than ``audit_days`` (default 0: kept forever);
* replay — ``oltp.inbound_counted`` rows (which bounce/complaint of a job was counted) older
  than ``jobs_days``: written after their job finished, they go after it.

Deletes run in batches of ``batch_size`` rows, each its own short transaction, so a large purge
never holds long locks; an interrupted run is simply finished by the next one.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable

import asyncpg
import msgspec

from engine import audit
from engine.config import Config
from engine.errors import RetentionError
from engine.store import content as content_store
from engine.store import retention as retention_store
from engine.store.pool import Tiers

log = logging.getLogger("engine.retention")


class RetentionResult(msgspec.Struct, frozen=True, kw_only=True):
    """Rows deleted per tier (or that would be, with ``dry_run``)."""

    content: int = 0
    attachments: int = 0
    inbound: int = 0
    events: int = 0
    jobs: int = 0
    audit: int = 0
    replay: int = 0
    dry_run: bool = False


def _attachment_refs(codec: str, body: bytes) -> Iterable[bytes]:
    """Attachment hashes a stored body refers to (only the engine client's codec splits them)."""
    if codec != content_store.CODEC:
        return ()
    doc = msgspec.msgpack.decode(zlib.decompress(body))
    # _StoredContent is array_like: [content, attachment_hashes]
    return doc[1] if isinstance(doc, list) and len(doc) == 2 else ()


async def _purge_contents_apart(
    content: asyncpg.Pool, main: asyncpg.Pool, days: int, batch: int, *, dry_run: bool
) -> int:
    """The ``content`` rule with the content tier on its own server, a page at a time."""
    total = 0
    after: tuple[str, bytes] = ("", b"")
    while True:
        page = await retention_store.old_contents(content, days, after, batch)
        if not page:
            return total
        after = page[-1]
        used = await retention_store.contents_in_use(main, page)
        doomed = [k for k in page if k not in used]
        if doomed:
            total += (
                len(doomed)
                if dry_run
                else await retention_store.delete_contents(content, doomed, days)
            )
        if len(page) < batch:
            return total


async def _purge_attachments(pool: asyncpg.Pool, days: int, batch: int, *, dry_run: bool) -> int:
    """Attachments older than the cutoff that no remaining body refers to.

    A body refers to its attachments only inside its compressed blob, so the remaining bodies
    of the tenants concerned are read (in batches) to collect the hashes still in use.
    """
    candidates = await retention_store.old_attachments(pool, days)
    if not candidates:
        return 0
    due = {(r["tenant_id"], bytes(r["sha256"])) for r in candidates}
    for tenant in {t for t, _ in due}:
        oldest = min(r["created_at"] for r in candidates if r["tenant_id"] == tenant)
        after = b""
        while True:
            rows = await retention_store.bodies_since(pool, tenant, oldest, after, batch)
            if not rows:
                break
            after = bytes(rows[-1]["sha256"])
            for r in rows:
                for ref in _attachment_refs(r["codec"], r["body"]):
                    due.discard((tenant, bytes(ref)))
    if dry_run or not due:
        return len(due)
    return await retention_store.delete_attachments(pool, due)


async def run(
    pool: asyncpg.Pool,
    cfg: Config,
    *,
    dry_run: bool = False,
    actor: str = "daemon",
    tiers: Tiers | None = None,
) -> RetentionResult:
    """Apply every retention rule once; the daemon calls this daily, the CLI on demand.

    ``tiers``: with the content tier on another server, its rules run there (bodies: listed
    there, checked against the unfinished jobs here, deleted there if still old)."""
    content = pool if tiers is None else tiers.content
    r = cfg.retention
    days = {
        "content": r.content_days,
        "inbound": cfg.inbound.retention_days if r.inbound_days is None else r.inbound_days,
        "events": r.events_days,
        "jobs": r.jobs_days,
        "audit": r.audit_days,
        "replay": r.jobs_days,
    }
    counts: dict[str, int] = {}
    try:
        for rule, age in days.items():
            if age <= 0:
                continue
            db = content if rule in retention_store.CONTENT_RULES else pool
            if rule == "content" and content is not pool:
                counts[rule] = await _purge_contents_apart(
                    content, pool, age, r.batch_size, dry_run=dry_run
                )
            elif dry_run:
                counts[rule] = await retention_store.count_due(db, rule, age)
            else:
                counts[rule] = await retention_store.purge_due(db, rule, age, r.batch_size)
        if r.content_days > 0:
            counts["attachments"] = await _purge_attachments(
                content, r.content_days, r.batch_size, dry_run=dry_run
            )
        result = RetentionResult(dry_run=dry_run, **counts)
        if not dry_run:
            await audit.record(pool, actor, "retention.run", None, msgspec.to_builtins(result))
    except asyncpg.PostgresError as exc:
        raise RetentionError(
            f"retention purge failed: {exc}", hint="rows already deleted stay deleted; re-run"
        ) from None
    log.info("retention run", extra=msgspec.to_builtins(result))
    return result
