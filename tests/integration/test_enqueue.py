"""Enqueue through the Python path and the SQL function: validation, idempotency, content dedup."""

from __future__ import annotations

import base64

import asyncpg
import orjson

from engine.config import Config
from engine.enqueue import enqueue
from engine.store import content as content_store
from engine.store import jobs as job_store
from engine.store import tenants
from engine.tenancy import domains as sending_domains


def job(i: int, **over: object) -> bytes:
    doc: dict[str, object] = {
        "tenant_id": "acme",
        "idempotency_key": f"k{i}",
        "from": "news@acme.example",
        "to": f"user{i}@example.com",
        "subject": "Hello",
        "text": "Same body for everyone",
        "campaign_id": "c1",
    }
    doc.update(over)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


async def _enqueue(pool: asyncpg.Pool, cfg: Config, items: list[bytes]) -> list:  # type: ignore[type-arg]
    return await enqueue(
        pool, items, max_message_bytes=cfg.queue.max_message_bytes, max_age_s=cfg.queue.max_age_s
    )


async def test_campaign_body_stored_once(pool: asyncpg.Pool, cfg: Config) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    results = await _enqueue(pool, cfg, [job(i) for i in range(10_000)])
    assert all(r.error is None and r.created for r in results)
    assert len({r.job_id for r in results}) == 10_000
    assert await pool.fetchval("SELECT count(*) FROM content.email_content") == 1
    assert await pool.fetchval("SELECT count(*) FROM content.email_messages") == 1
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 10_000
    row = await pool.fetchrow("SELECT tenant_id, sha256 FROM content.email_content")
    loaded = await content_store.load(pool, [(row["tenant_id"], bytes(row["sha256"]))])
    (content,) = loaded.values()
    assert content.text == "Same body for everyone" and content.subject == "Hello"
    # compressed: the stored blob is smaller than the body it encodes for long bodies
    assert await pool.fetchval("SELECT count(*) FROM oltp.senders") == 1


async def test_idempotent_reenqueue(pool: asyncpg.Pool, cfg: Config) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    first = await _enqueue(pool, cfg, [job(i) for i in range(50)])
    again = await _enqueue(pool, cfg, [job(i) for i in range(50)])
    assert [r.job_id for r in first] == [r.job_id for r in again]
    assert all(r.created for r in first) and not any(r.created for r in again)
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 50


async def test_bad_jobs_refused_rest_go_in(pool: asyncpg.Pool, cfg: Config) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    items = [
        job(0),
        job(1, to="not-an-address"),
        job(2, headers={"X-Evil": "a\r\nBcc: victim@example.com"}),
        job(3, tenant_id="ghost"),
        job(4, subject="line\nbreak"),
        b"{not json",
        job(6, text="x" * 2000, idempotency_key="big"),
        job(7),
    ]
    small = Config(**{**{f: getattr(cfg, f) for f in cfg.__struct_fields__}})
    results = await enqueue(pool, items, max_message_bytes=1000, max_age_s=small.queue.max_age_s)
    errors = {r.index: r.error for r in results if r.error}
    assert set(errors) == {1, 2, 3, 4, 5, 6}
    assert "ghost" in (errors[3] or "") and "engine tenants add" in (errors[3] or "")
    assert results[0].job_id and results[7].job_id
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 2


async def test_attachments_deduplicated_across_contents(pool: asyncpg.Pool, cfg: Config) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    pdf = base64.b64encode(b"%PDF-1.4 " + bytes(range(256)) * 50).decode()
    att = [{"filename": "a.pdf", "content": pdf, "content_type": "application/pdf"}]
    results = await _enqueue(
        pool, cfg, [job(1, subject="One", attachments=att), job(2, subject="Two", attachments=att)]
    )
    assert all(r.error is None for r in results)
    assert await pool.fetchval("SELECT count(*) FROM content.email_content") == 2
    assert await pool.fetchval("SELECT count(*) FROM content.attachments") == 1
    rows = await pool.fetch("SELECT tenant_id, sha256 FROM content.email_content")
    loaded = await content_store.load(pool, [(r["tenant_id"], bytes(r["sha256"])) for r in rows])
    for content in loaded.values():
        assert content.attachments[0].content.startswith(b"%PDF-1.4")


async def test_sql_function_enqueue_in_caller_transaction(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    # the pool's jsonb codec takes Python values (a Node client would pass JSON text)
    batch = [orjson.loads(job(i)) for i in range(3)] + [orjson.loads(job(9, to="x"))]
    async with pool.acquire() as conn:
        async with conn.transaction():
            rows = await conn.fetch("SELECT * FROM engine.enqueue($1::jsonb)", batch)
            assert [r["error"] is None for r in rows] == [True, True, True, False]
        # a rolled back caller transaction leaves nothing behind
        tr = conn.transaction()
        await tr.start()
        await conn.fetch("SELECT * FROM engine.enqueue($1::jsonb)", orjson.loads(job(20)))
        await tr.rollback()
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 3
    counts = await job_store.counts(pool)
    assert counts["queued"] == 3


async def test_python_client(pool: asyncpg.Pool, cfg: Config) -> None:
    from engine.client import EngineClient

    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    async with EngineClient(cfg.database.dsn) as client:
        one = await client.enqueue_one(orjson.loads(job(1, priority="high")))
        assert one.job_id and one.created and one.error is None
        again = await client.enqueue([orjson.loads(job(1, priority="high")), job(2, to="@")])
        assert again[0].job_id == one.job_id and not again[0].created
        assert again[1].error and "to" in again[1].error
    assert await pool.fetchval("SELECT priority FROM queue.jobs WHERE id = $1", one.job_id) == 0
