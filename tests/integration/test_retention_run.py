"""`engine retention run`: each tier loses exactly the rows past its age, nothing else — in
particular never a body that an unsent job still needs, nor an attachment a kept body uses."""

from __future__ import annotations

import asyncpg
import pytest

from engine import audit
from engine.config import Config
from engine.enqueue import enqueue
from engine.model import Attachment, Job
from engine.retention import run
from engine.store import inbound, tenants
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(60)

PDF = Attachment(filename="terms.pdf", content=b"%PDF-1.4 same terms for everyone")


def job(key: str, text: str, *, attach: bool = False) -> Job:
    return Job(
        tenant_id="acme",
        idempotency_key=key,
        to=f"{key}@example.com",
        from_="n@acme.test",
        subject="s",
        text=text,
        attachments=[PDF] if attach else [],
    )


async def age(pool: asyncpg.Pool, table: str, column: str, days: int, where: str) -> None:
    await pool.execute(
        f"UPDATE {table} SET {column} = now() - make_interval(days => {days}) WHERE {where}"
    )


async def seed(pool: asyncpg.Pool) -> dict[str, int]:
    await tenants.add(pool, "acme")
    res = await enqueue(
        pool,
        [
            job("old-sent", "old body", attach=True),  # body 40 days old, job finished
            job("old-queued", "old but still queued"),  # body 40 days old, job still queued
            job("new-sent", "new body", attach=True),  # recent body using the same PDF
        ],
        max_message_bytes=1 << 20,
        max_age_s=3600,
    )
    ids = {r.idempotency_key or "": r.job_id or 0 for r in res}
    old_sent, new_sent = ids["old-sent"], ids["new-sent"]
    await pool.execute(
        "UPDATE queue.jobs SET state = 'relayed', finished_at = now() WHERE id = ANY($1)",
        [old_sent, new_sent],
    )
    await age(pool, "queue.jobs", "finished_at", 40, f"id = {old_sent}")
    old_shas = "(SELECT content_sha256 FROM queue.jobs WHERE idempotency_key LIKE 'old-%')"
    await age(pool, "content.email_content", "created_at", 40, f"sha256 IN {old_shas}")
    await age(pool, "content.attachments", "created_at", 40, "true")  # the shared PDF
    await pool.execute(
        "INSERT INTO oltp.events (tenant_id, kind, created_at) VALUES"
        " ('acme', 'relayed', now() - interval '100 days'), ('acme', 'relayed', now())"
    )
    for _ in range(2):
        await inbound.store_raw(
            pool, b"x", peer="p", mail_from="", rcpt_to=[], verp_job_id=None, fbl=False
        )
    await age(pool, "content.inbound_messages", "received_at", 31, "id = 1")
    return ids


async def test_retention_purges_only_what_is_due(pool: asyncpg.Pool, cfg: Config) -> None:
    ids = await seed(pool)
    dry = await run(pool, cfg, dry_run=True)
    assert (dry.content, dry.jobs, dry.events, dry.inbound, dry.attachments) == (1, 1, 1, 1, 0)
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 3  # dry run deletes nothing

    result = await run(pool, cfg, actor="cli:test")
    assert (result.content, result.jobs, result.events, result.inbound) == (1, 1, 1, 1)
    # The PDF is 40 days old but the recent body still refers to it.
    assert result.attachments == 0
    assert await pool.fetchval("SELECT count(*) FROM content.attachments") == 1

    left = {
        r["idempotency_key"] for r in await pool.fetch("SELECT idempotency_key FROM queue.jobs")
    }
    assert left == {"old-queued", "new-sent"}
    # The queued job's old body survived: it can still be sent.
    assert await pool.fetchval(
        "SELECT count(*) FROM content.email_content c JOIN queue.jobs j"
        " ON j.content_sha256 = c.sha256 WHERE j.id = $1",
        ids["old-queued"],
    )
    assert await pool.fetchval("SELECT count(*) FROM content.email_content") == 2
    assert await pool.fetchval("SELECT count(*) FROM content.email_messages") == 2
    assert (
        await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind <> 'queued'") == 1
    )  # the enqueue path's own "queued" events are recent and stay
    assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 1
    (entry,) = await audit.entries(pool, action="retention.run")
    assert entry.actor == "cli:test" and entry.detail["content"] == 1

    # Once the recent body is gone too, the orphaned PDF goes with the next run.
    await age(pool, "content.email_content", "created_at", 40, "true")
    await pool.execute("UPDATE queue.jobs SET state = 'cancelled', finished_at = now()")
    again = await run(pool, cfg)
    assert again.content == 2 and again.attachments == 1 and again.jobs == 0


async def test_zero_keeps_a_tier_forever(pool: asyncpg.Pool, cfg: Config) -> None:
    await seed(pool)
    keep = make_config(
        cfg.database.dsn,
        cfg.redis.prefix,
        retention={"content_days": 0, "events_days": 0, "jobs_days": 0, "inbound_days": 0},
    )
    result = await run(pool, keep)
    assert (result.content, result.events, result.jobs, result.inbound) == (0, 0, 0, 0)
    assert (
        await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind <> 'queued'") == 2
    )  # the enqueue path's own "queued" events are recent and stay


async def test_batches_finish_the_job(pool: asyncpg.Pool, cfg: Config) -> None:
    await tenants.add(pool, "acme")
    await pool.execute(
        "INSERT INTO oltp.events (tenant_id, kind, created_at)"
        " SELECT 'acme', 'relayed', now() - interval '200 days' FROM generate_series(1, 25)"
    )
    small = make_config(cfg.database.dsn, cfg.redis.prefix, retention={"batch_size": 10})
    assert (await run(pool, small)).events == 25
    assert (
        await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind <> 'queued'") == 0
    )  # the enqueue path's own "queued" events are recent and stay
