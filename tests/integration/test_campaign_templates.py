"""Campaign templates end to end: stored once, variables per job, rendered at send time.

A templated campaign goes through the real daemon to a fake MailU node: every recipient gets
their own body, a job missing a variable is refused at enqueue (both enqueue paths) while the
rest of its batch goes in, queued jobs keep the version current when they were enqueued, a job
its template cannot render fails with the reason (never a broken mail), and the campaign's
figures come back from the OLAP tier through the admin API.
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from engine import campaigns
from engine.admin import AdminContext
from engine.compose.template import TemplateSource
from engine.config import Config
from engine.enqueue import enqueue
from engine.errors import CampaignError, TemplateError
from engine.keys import service as key_service
from engine.store import tenants
from engine.tenancy import domains as sending_domains
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU
from tests.integration.test_admin_api import AUTH, admin  # noqa: F401
from tests.integration.test_cli import engine
from tests.integration.test_daemon import daemon_config, run_until

SOURCE = TemplateSource(
    subject="Hello {{ first_name }}",
    text="Hi {{ first_name }}, your code is {{ code }}.{% if vip is defined %} VIP{% endif %}",
    html="<p>Hi {{ first_name }}</p><p>{{ code }}</p>",
)


def templated(i: int, **variables: Any) -> bytes:
    return orjson.dumps(
        {
            "tenant_id": "acme",
            "idempotency_key": f"t{i}",
            "from": "news@acme.example",
            "to": f"user{i}@example.com",
            "campaign_id": "spring",
            "variables": variables,
        }
    )


def _body(data: bytes) -> tuple[str, str, str]:
    msg = email.message_from_bytes(data, policy=policy.default)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return (
        str(msg["Subject"]),
        text.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


async def test_templated_campaign_rendered_per_recipient(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    v1 = await campaigns.set_template(pool, "acme", "spring", SOURCE)
    assert v1.version == 1
    batch = [
        templated(0, first_name="Ann", code="A-0"),
        templated(1, first_name="<Bob>", code="B-1", vip=True),
        templated(2, first_name="Cy"),  # no code: refused, the others still go in
        templated(3, first_name="Di", code=7),
    ]
    res = await enqueue(pool, batch, max_message_bytes=10**6, max_age_s=3600)
    assert [r.error is None for r in res] == [True, True, False, True]
    assert res[2].error is not None and "variables: missing code" in res[2].error
    # A new version after enqueue: the queued jobs keep rendering version 1.
    v2 = await campaigns.set_template(
        pool, "acme", "spring", TemplateSource(subject="v2 {{ first_name }}", text="v2")
    )
    assert v2.version == 2
    # Version 2 needs only first_name; this job renders version 2.
    res = await enqueue(
        pool, [templated(4, first_name="Ed")], max_message_bytes=10**6, max_age_s=3600
    )
    assert res[0].error is None
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    await run_until(cfg, pool, {"relayed": 4})
    by_rcpt = {m.rcpt_tos[0]: m.data for m in mailu.received}
    assert set(by_rcpt) == {f"user{i}@example.com" for i in (0, 1, 3, 4)}
    assert _body(by_rcpt["user0@example.com"]) == (
        "Hello Ann",
        "Hi Ann, your code is A-0.\n",
        "<p>Hi Ann</p><p>A-0</p>\n",
    )
    subject, text, html = _body(by_rcpt["user1@example.com"])
    assert subject == "Hello <Bob>" and text.startswith("Hi <Bob>, your code is B-1. VIP")
    assert "<p>Hi &lt;Bob&gt;</p>" in html  # HTML is autoescaped, text is not
    assert _body(by_rcpt["user3@example.com"])[1].startswith("Hi Di, your code is 7.")
    msg = email.message_from_bytes(by_rcpt["user4@example.com"], policy=policy.default)
    assert msg["Subject"] == "v2 Ed"
    versions = await pool.fetch("SELECT recipient, template_version FROM queue.jobs")
    assert {r["recipient"]: r["template_version"] for r in versions} == {
        "user0@example.com": 1,
        "user1@example.com": 1,
        "user3@example.com": 1,
        "user4@example.com": 2,
    }
    # The content tier holds one body for the campaign's jobs, not one per recipient.
    hashes = await pool.fetchval("SELECT count(DISTINCT content_sha256) FROM queue.jobs")
    assert hashes == 1
    found = await campaigns.stats(pool, "acme", "spring")
    assert found.totals.relayed == 4 and len(found.days) == 1
    relay_times = "SELECT sum(n) FROM olap.latency_histogram WHERE kind = 'relay'"
    assert await pool.fetchval(relay_times) == 4


async def test_render_failure_fails_the_job_clearly(
    pool: asyncpg.Pool, clean_db: str, redis_prefix: str, mailu: FakeMailU
) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    await campaigns.set_template(
        pool, "acme", "spring", TemplateSource(subject="s", text="{{ 100 // count }}")
    )
    res = await enqueue(
        pool,
        [templated(0, count=0), templated(1, count=4)],
        max_message_bytes=10**6,
        max_age_s=3600,
    )
    assert all(r.error is None for r in res)
    cfg = daemon_config(clean_db, redis_prefix, [mailu])
    await run_until(cfg, pool, {"relayed": 1, "failed": 1})
    assert [m.rcpt_tos[0] for m in mailu.received] == ["user1@example.com"]
    reply = await pool.fetchval(
        "SELECT last_reply FROM queue.jobs WHERE recipient = 'user0@example.com'"
    )
    assert reply.startswith("template: text: ZeroDivisionError")
    found = await campaigns.stats(pool, "acme", "spring")
    assert (found.totals.relayed, found.totals.failed) == (1, 1)


async def test_sql_enqueue_checks_template_variables(pool: asyncpg.Pool, clean_db: str) -> None:
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    await campaigns.set_template(pool, "acme", "spring", SOURCE)
    jobs = [
        orjson.loads(templated(0, first_name="Ann", code="x")),
        orjson.loads(templated(1, first_name="Bob")),
        {**orjson.loads(templated(2, first_name="C", code="y")), "campaign_id": "nope"},
        {**orjson.loads(templated(3, first_name="C", code="y")), "text": "both"},
    ]
    rows = await pool.fetch(
        "SELECT ord, job_id, error FROM engine.enqueue($1::jsonb) ORDER BY ord",
        jobs,
    )
    assert rows[0]["job_id"] is not None and rows[0]["error"] is None, rows[0]
    assert rows[1]["error"] == "variables: missing code used by campaign spring version 1"
    assert "no template stored for campaign nope" in rows[2]["error"]
    assert "takes subject/text/html from its campaign" in rows[3]["error"]
    stored = await pool.fetchrow(
        "SELECT template_version, variables FROM queue.jobs WHERE id = $1", rows[0]["job_id"]
    )
    assert stored["template_version"] == 1
    assert stored["variables"] == {"first_name": "Ann", "code": "x"}


async def test_bad_templates_are_refused(pool: asyncpg.Pool, clean_db: str) -> None:
    await tenants.add(pool, "acme")
    with pytest.raises(TemplateError, match="include is not allowed"):
        await campaigns.set_template(
            pool, "acme", "c", TemplateSource(subject="s", text="{% include 'x' %}")
        )
    with pytest.raises(TemplateError, match="line 1"):
        await campaigns.set_template(pool, "acme", "c", TemplateSource(subject="s", text="{{"))
    with pytest.raises(CampaignError, match="unknown tenant"):
        await campaigns.set_template(pool, "nobody", "c", SOURCE)


async def test_campaign_routes(admin: tuple[TestClient[Any, Any], AdminContext]) -> None:
    client, _ = admin
    body = {"tenant_id": "acme", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}
    r = await client.put("/v1/campaigns/spring", json=body, headers=AUTH)
    assert r.status == 200, await r.text()
    assert await r.json() == {"campaign_id": "spring", "tenant_id": "acme", "version": 1}
    r = await client.put("/v1/campaigns/spring", json=body, headers=AUTH)
    assert (await r.json())["version"] == 2
    r = await client.put(
        "/v1/campaigns/spring", json={**body, "text": "{% import 'x' as y %}"}, headers=AUTH
    )
    assert r.status == 400 and "import is not allowed" in (await r.json())["error"]
    r = await client.put("/v1/campaigns/spring", json=body)
    assert r.status == 401
    r = await client.get("/v1/campaigns/spring/stats?tenant=acme", headers=AUTH)
    assert r.status == 200
    stats = await r.json()
    assert stats["totals"] == dict.fromkeys(
        ("relayed", "delivered", "bounced", "complained", "unsubscribed", "deferred", "failed"), 0
    )
    assert stats["days"] == [] and stats["campaign_id"] == "spring"
    r = await client.get("/v1/campaigns/nope/stats?tenant=acme", headers=AUTH)
    assert r.status == 404  # no template and no mail: no such campaign
    r = await client.post(
        "/v1/messages",
        json=[orjson.loads(templated(0, name="Ann")), orjson.loads(templated(1))],
        headers=AUTH,
    )
    out = await r.json()
    assert r.status in (200, 207), out
    results = out["results"] if isinstance(out, dict) else out
    assert results[0].get("job_id") and "missing name" in results[1]["error"]
    # The operator's view of the message is the body this recipient gets.
    r = await client.get(f"/v1/messages/{results[0]['job_id']}?content=true", headers=AUTH)
    assert r.status == 200
    content = (await r.json())["content"]
    assert "Subject: Hi Ann" in content and "Hello Ann" in content


async def test_tenant_keys_act_for_their_own_tenant(
    admin: tuple[TestClient[Any, Any], AdminContext],
) -> None:
    client, ctx = admin
    await tenants.add(ctx.pool, "other")
    send, _ = await key_service.create(ctx.pool, "acme", "send", actor="test")
    read, _ = await key_service.create(ctx.pool, "acme", "read", actor="test")
    as_send = {"Authorization": f"Bearer {send}"}
    r = await client.put("/v1/campaigns/spring", json={"subject": "Hi"}, headers=as_send)
    assert r.status == 400  # neither text nor html
    body = {"subject": "Hi {{ name }}", "html": "<p>{{ name }}</p>"}
    r = await client.put("/v1/campaigns/spring", json=body, headers=as_send)
    assert r.status == 200
    assert await r.json() == {"campaign_id": "spring", "tenant_id": "acme", "version": 1}
    r = await client.put(
        "/v1/campaigns/spring", json={**body, "tenant_id": "other"}, headers=as_send
    )
    assert r.status == 404  # another tenant: as if it did not exist
    as_read = {"Authorization": f"Bearer {read}"}
    r = await client.get("/v1/campaigns/spring/stats", headers=as_read)
    assert r.status == 200 and (await r.json())["tenant_id"] == "acme"
    r = await client.put("/v1/campaigns/spring", json=body, headers=as_read)
    assert r.status == 403


def test_campaigns_cli(cfg: Config, clean_db: str, tmp_path: Path) -> None:
    assert engine(cfg, "migrate").returncode == 0
    assert engine(cfg, "tenants", "add", "acme").returncode == 0
    html = tmp_path / "spring.html"
    html.write_text("<p>Hi {{ name }}</p>", encoding="utf-8")
    out = engine(
        cfg,
        "campaigns",
        "set",
        "--tenant",
        "acme",
        "spring",
        "--subject",
        "Hi {{ name }}",
        "--html",
        str(html),
        "--text",
        "-",
        stdin=b"Hello {{ name }}, {{ code }}",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"acme\tspring\tversion 1\n"
    shown = orjson.loads(engine(cfg, "campaigns", "show", "--tenant", "acme", "spring").stdout)
    assert (shown["version"], shown["required"]) == (1, ["code", "name"])
    assert shown["html"] == "<p>Hi {{ name }}</p>"
    bad = engine(
        cfg,
        "campaigns",
        "set",
        "--tenant",
        "acme",
        "spring",
        "--subject",
        "s",
        "--text",
        "-",
        stdin=b"{% include 'etc/passwd' %}",
    )
    assert bad.returncode != 0 and b"include is not allowed" in bad.stderr
    stats = orjson.loads(engine(cfg, "campaigns", "stats", "--tenant", "acme", "spring").stdout)
    assert stats["totals"]["relayed"] == 0 and stats["days"] == []
    missing = engine(cfg, "campaigns", "show", "--tenant", "acme", "autumn")
    assert missing.returncode == 1 and b"no template stored" in missing.stderr
