"""`engine gdpr erase`: after it, no table holds the address in clear (every text/json column of
every engine table, found from information_schema, plus the compressed bodies and raw bounces),
the recipient is still suppressed, and nobody else's data changed."""

from __future__ import annotations

import base64
import email
import zlib

import asyncpg
import pytest

from engine import audit
from engine.config import Config
from engine.enqueue import enqueue
from engine.gdpr.erase import erase
from engine.gdpr.pseudonym import pseudonym
from engine.gdpr.store import ENGINE_SCHEMAS
from engine.model import Attachment, Job
from engine.store import inbound, suppressions, tenants

pytestmark = pytest.mark.timeout(60)

BOB = "bob@example.com"


async def clear_mentions(pool: asyncpg.Pool, needle: str, skip_tenant: str) -> list[str]:
    """Every (table.column) whose rows (of tenants other than ``skip_tenant``) contain needle."""
    cols = await pool.fetch(
        "SELECT c.table_schema, c.table_name, c.column_name,"
        " EXISTS (SELECT 1 FROM information_schema.columns t WHERE t.table_schema ="
        " c.table_schema AND t.table_name = c.table_name AND t.column_name = 'tenant_id') AS ten"
        " FROM information_schema.columns c JOIN information_schema.tables tb"
        " USING (table_schema, table_name) WHERE tb.table_type = 'BASE TABLE'"
        " AND c.table_schema = ANY($1::text[])"
        " AND (c.data_type IN ('text', 'character varying', 'json', 'jsonb')"
        " OR c.udt_name = '_text')",
        list(ENGINE_SCHEMAS),
    )
    assert len(cols) > 20  # the scan really covers the schema
    found = []
    for c in cols:
        table = f'"{c["table_schema"]}"."{c["table_name"]}"'
        scope = "(tenant_id IS DISTINCT FROM $2) AND " if c["ten"] else ""
        args = [f"%{needle}%"] + ([skip_tenant] if c["ten"] else [])
        n = await pool.fetchval(
            f'SELECT count(*) FROM {table} WHERE {scope}"{c["column_name"]}"::text ILIKE $1', *args
        )
        if n:
            found.append(f"{table}.{c['column_name']}")
    return found


async def compressed_mentions(pool: asyncpg.Pool, needle: bytes) -> int:
    hits = 0
    for r in await pool.fetch("SELECT body, codec FROM content.email_content"):
        body = zlib.decompress(r["body"]) if r["codec"] == "zlib-msgpack" else r["body"]
        hits += needle in body.lower()
    for r in await pool.fetch("SELECT data FROM content.attachments"):
        hits += needle in zlib.decompress(r["data"]).lower()
    for r in await pool.fetch("SELECT raw FROM content.inbound_messages"):
        message = email.message_from_bytes(zlib.decompress(r["raw"]))
        parts = [p.get_payload(decode=True) or b"" for p in message.walk()]
        hits += any(needle in bytes(p).lower() for p in [message.as_bytes(), *parts])
    return hits


async def seed(pool: asyncpg.Pool, content: asyncpg.Pool | None = None) -> dict[str, int]:
    """``content``: the content tier's server when it lives apart (tests/integration/
    test_tiers_apart.py)."""
    content = pool if content is None else content
    await tenants.add(pool, "acme")
    await tenants.add(pool, "other")
    jobs = [
        Job(
            tenant_id="acme",
            idempotency_key="welcome-Bob@Example.com",
            to="Bob@Example.com",
            from_="hello@acme.test",
            subject="Welcome, bob@example.com",
            text="Your login is BOB@example.com.",
            headers={"X-User": "bob@example.com"},
            attachments=[Attachment(filename="card.txt", content=b"Member: bob@example.com")],
            metadata={"user": {"email": BOB}},
        ),
        Job(
            tenant_id="acme",
            idempotency_key="news-bob",
            to=BOB,
            from_="news@acme.test",
            subject="News",
            text="Same news for everyone",
            campaign_id="c1",
            list_unsubscribe="https://acme.test/u",
        ),
        Job(
            tenant_id="acme",
            idempotency_key="news-alice",
            to="alice@example.com",
            from_="news@acme.test",
            subject="News",
            text="Same news for everyone",
            campaign_id="c1",
            list_unsubscribe="https://acme.test/u",
        ),
        Job(
            tenant_id="other",
            idempotency_key="k",
            to=BOB,
            from_="x@other.test",
            subject="Other tenant",
            text="hello",
        ),
    ]
    res = await enqueue(pool, jobs, max_message_bytes=1 << 20, max_age_s=3600, content_pool=content)
    ids = {r.idempotency_key or "": r.job_id or 0 for r in res}
    # The welcome mail went out and then bounced; the campaign one is still queued.
    await pool.execute(
        "UPDATE queue.jobs SET state = 'bounced', finished_at = now(),"
        " last_reply = '550 5.1.1 <bob@example.com>: no such user' WHERE id = $1",
        ids["welcome-Bob@Example.com"],
    )
    await pool.execute(
        "INSERT INTO oltp.events (tenant_id, job_id, kind, recipient, reply, data) VALUES"
        " ('acme', $1, 'bounced', 'Bob@Example.com', '550 <bob@example.com>', $2),"
        " ('acme', $3, 'queued', 'alice@example.com', NULL, NULL)",
        ids["welcome-Bob@Example.com"],
        {"rcpt": BOB},
        ids["news-alice"],
    )
    encoded = base64.b64encode(b"Final-Recipient: rfc822; bob@example.com\n")
    dsn = b"From: MAILER-DAEMON@mx.test\nContent-Transfer-Encoding: base64\n\n" + encoded
    await inbound.store_raw(
        content, dsn, peer="192.0.2.1", mail_from="", rcpt_to=["b-1@bounces.test"],
        verp_job_id=None, fbl=False,
    )  # fmt: skip
    await inbound.store_raw(
        content, b"Subject: unrelated\n\nnothing here\n", peer="192.0.2.1", mail_from="",
        rcpt_to=["b-2@bounces.test"], verp_job_id=None, fbl=False,
    )  # fmt: skip
    await suppressions.add(pool, [("acme", BOB, "userunknown", "bounce", None)])
    await audit.record(
        pool, "admin:ops", "suppression.add", BOB, {"address": BOB}, tenant_id="acme"
    )
    return ids


async def test_erase_leaves_no_clear_address_and_keeps_it_suppressed(
    pool: asyncpg.Pool, cfg: Config
) -> None:
    ids = await seed(pool)
    assert await clear_mentions(pool, BOB, skip_tenant="other")  # the seed really mentions it

    result = await erase(pool, "acme", " BOB@example.com ", actor="cli:test")

    assert await clear_mentions(pool, BOB, skip_tenant="other") == []
    assert await compressed_mentions(pool, BOB.encode()) == 0
    assert result.jobs == 2 and result.jobs_cancelled == 1
    assert result.contents_deleted == 1  # the personal welcome mail; the campaign body stays
    # events: the seeded one and the "queued" event enqueue records for each of Bob's two jobs
    assert result.inbound_deleted == 1 and result.events == 3 and result.contents_kept_in_use == 0

    # Still suppressed, in clear or any case, through the check the dispatcher will use.
    pairs = [("acme", "Bob@Example.com"), ("acme", "alice@example.com"), ("other", BOB)]
    assert await suppressions.check(pool, pairs) == {("acme", "bob@example.com")}
    row = await pool.fetchrow("SELECT address, source, reason FROM oltp.suppressions")
    assert row["address"] == pseudonym(BOB) and row["source"] == "gdpr"
    assert "userunknown" in row["reason"]

    # History keeps its shape under the pseudonym; the queued campaign job is cancelled.
    jobs = {
        r["id"]: r
        for r in await pool.fetch("SELECT id, recipient, state, tenant_id FROM queue.jobs")
    }
    assert jobs[ids["news-bob"]]["state"] == "cancelled"
    assert jobs[ids["news-bob"]]["recipient"] == pseudonym(BOB)
    assert jobs[ids["welcome-Bob@Example.com"]]["state"] == "bounced"

    # Others untouched: alice's job and the shared body, the other tenant's data about Bob.
    assert jobs[ids["news-alice"]]["recipient"] == "alice@example.com"
    assert jobs[ids["news-alice"]]["state"] == "queued"
    assert jobs[ids["k"]]["recipient"] == BOB
    assert await pool.fetchval("SELECT count(*) FROM content.email_content") == 2
    assert await pool.fetchval("SELECT count(*) FROM content.inbound_messages") == 1

    # The erasure is audited under the pseudonym.
    (entry,) = await audit.entries(pool, action="gdpr.erase")
    assert entry.target == pseudonym(BOB) and entry.actor == "cli:test"
    assert entry.detail["jobs"] == 2


async def test_erase_is_idempotent_and_works_for_unknown_addresses(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    first = await erase(pool, "acme", "nobody@example.com", actor="t")
    second = await erase(pool, "acme", "nobody@example.com", actor="t")
    assert first.jobs == second.jobs == 0
    assert await suppressions.check(pool, [("acme", "NOBODY@example.com")])
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 1


async def test_shared_body_still_needed_is_kept_and_reported(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    body = {"from_": "n@acme.test", "subject": "Ask bob@example.com", "text": "t"}
    jobs = [
        Job(tenant_id="acme", idempotency_key=k, to=to, **body)  # type: ignore[arg-type]
        for k, to in (("1", BOB), ("2", "carol@example.com"))
    ]
    await enqueue(pool, jobs, max_message_bytes=1 << 20, max_age_s=3600)
    result = await erase(pool, "acme", BOB, actor="t")
    assert result.contents_deleted == 0 and result.contents_kept_in_use == 1
    # carol's mail can still be sent
    assert await pool.fetchval("SELECT count(*) FROM content.email_content") == 1
