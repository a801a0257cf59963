"""Sending domains belong to tenants: cross-tenant From / Sender refused at enqueue on every path.

Real PostgreSQL; DNS mocked at the seam for TXT verification. Tenant A verifies acme.example;
tenant B may not send as it (nor as a subdomain) through the Python service (what the CLI and
``POST /v1/messages`` call), the SQL function ``engine.enqueue(jsonb)``, or the CLI itself.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.config import Config
from engine.enqueue import enqueue
from engine.errors import DomainError
from engine.store import domains as domain_store
from engine.store import tenants
from engine.tenancy import domains
from engine.tenancy.rules import record_name


def job(tenant: str, i: int, sender: str = "news@acme.example", **over: Any) -> bytes:
    doc: dict[str, Any] = {
        "tenant_id": tenant,
        "idempotency_key": f"{tenant}-{i}",
        "from": sender,
        "to": f"user{i}@example.com",
        "subject": "hi",
        "text": "hello",
        **over,
    }
    return orjson.dumps(doc)


def raw_job(tenant: str, i: int, head: str) -> bytes:
    raw = (head + "To: u@example.com\r\nSubject: s\r\n\r\nbody\r\n").encode()
    return orjson.dumps(
        {
            "tenant_id": tenant,
            "idempotency_key": f"{tenant}-raw-{i}",
            "from": "news@acme.example",
            "to": "u@example.com",
            "raw": base64.b64encode(raw).decode(),
        }
    )


@pytest.fixture
async def owned(pool: asyncpg.Pool) -> None:
    """Tenant A owns acme.example (verified); B owns globex.example; C registered nothing."""
    assert await pool.fetchval("SELECT current_user") == "engine_worker"  # rules on (conftest)
    for t in ("A", "B", "C"):
        await tenants.add(pool, t)
    await domains.add(pool, "A", "acme.example", verified=True)
    await domains.add(pool, "B", "globex.example", verified=True)


async def _py(pool: asyncpg.Pool, items: list[bytes], enforce: bool = True) -> list[str | None]:
    res = await enqueue(
        pool, items, max_message_bytes=1 << 20, max_age_s=3600, enforce_domains=enforce
    )
    return [r.error for r in res]


async def test_python_path_refuses_another_tenants_domain(pool: asyncpg.Pool, owned: None) -> None:
    errors = await _py(
        pool,
        [
            job("A", 1),  # own domain
            job("A", 2, "x@news.acme.example"),  # own subdomain: allowed
            job("B", 3),  # A's domain
            job("B", 4, "x@mail.acme.example"),  # A's subdomain
            job("B", 5, "x@globex.example", headers={"Sender": "ops@acme.example"}),
            job("B", 6, "x@unregistered.example"),
            job("C", 7, "x@unregistered.example"),  # enforcement on: refused too
        ],
    )
    assert errors[0] is None and errors[1] is None
    assert errors[2] is not None and "belongs to another tenant" in errors[2]
    assert errors[3] is not None and "belongs to another tenant" in errors[3]
    assert errors[4] is not None and errors[4].startswith("header Sender:")
    assert errors[5] is not None and "not a verified sending domain of tenant B" in errors[5]
    assert errors[6] is not None and "engine domains add --tenant C" in errors[6]
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 2


async def test_raw_from_and_sender_are_checked(pool: asyncpg.Pool, owned: None) -> None:
    errors = await _py(
        pool,
        [
            raw_job("A", 1, "From: news@acme.example\r\n"),
            raw_job("B", 2, "From: news@acme.example\r\n"),
            raw_job("A", 3, "From: news@acme.example\r\nSender: ops@globex.example\r\n"),
        ],
    )
    assert errors[0] is None
    assert errors[1] is not None and "belongs to another tenant" in errors[1]
    assert errors[2] is not None and errors[2].startswith("raw Sender:")


async def test_enforcement_off_keeps_tenants_without_domains_sending(
    pool: asyncpg.Pool, owned: None
) -> None:
    errors = await _py(
        pool,
        [
            job("C", 1, "x@unregistered.example"),  # no domain registered: as before
            job("C", 2),  # but never as a domain another tenant verified
            job("B", 3, "x@unregistered.example"),  # B registered domains: held to them
        ],
        enforce=False,
    )
    assert errors[0] is None
    assert errors[1] is not None and "belongs to another tenant" in errors[1]
    assert errors[2] is not None and "not a verified sending domain" in errors[2]


async def _sql(pool: asyncpg.Pool, items: list[bytes]) -> list[str | None]:
    batch = [orjson.loads(i) for i in items]
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT * FROM engine.enqueue($1::jsonb) ORDER BY ord", batch)
    return [r["error"] for r in rows]


async def test_sql_path_refuses_another_tenants_domain(
    pool: asyncpg.Pool, owned: None, owner: asyncpg.Connection
) -> None:
    await domain_store.write_rules(owner, enforce=True, raw_trace="refuse")
    errors = await _sql(
        pool,
        [
            job("A", 1),
            job("A", 2, "x@news.acme.example"),
            job("B", 3),
            job("B", 4, "x@globex.example", headers={"sender": "Ops <ops@acme.example>"}),
            job("C", 5, "x@unregistered.example"),
            # the raw From disagrees with "from" (only Python checks they match): still refused
            orjson.dumps(
                orjson.loads(raw_job("B", 6, "From: news@acme.example\r\n"))
                | {"from": "x@globex.example"}
            ),
            raw_job("A", 7, "From: news@acme.example\r\nSender:\r\n ops@globex.example\r\n"),
            raw_job("A", 8, "From: Acme <news@acme.example>\r\n"),
        ],
    )
    assert errors[:2] == [None, None]
    assert errors[5] is not None and errors[5].startswith("raw From:")
    assert errors[6] is not None and errors[6].startswith("raw Sender:")
    assert errors[7] is None
    assert errors[2] is not None and "belongs to another tenant" in errors[2]
    assert errors[3] is not None and errors[3].startswith("header Sender:")
    assert errors[4] is not None and "not a verified sending domain of tenant C" in errors[4]
    await domain_store.write_rules(owner, enforce=False, raw_trace="refuse")
    errors = await _sql(pool, [job("C", 6, "x@unregistered.example"), job("C", 7)])
    assert errors[0] is None
    assert errors[1] is not None and "belongs to another tenant" in errors[1]


async def test_verification_by_dns_and_overlaps(pool: asyncpg.Pool, owned: None) -> None:
    pending = await domains.add(pool, "C", "initech.example")
    assert not pending.verified and pending.record_name == record_name("initech.example")
    txt: dict[str, list[str]] = {}

    async def dns(name: str, rdtype: str) -> list[str]:
        assert rdtype == "TXT"
        return txt.get(name, [])

    with pytest.raises(DomainError, match="does not hold"):
        await domains.verify(pool, "C", "initech.example", dns)
    txt[pending.record_name] = ["v=spf1 -all", pending.record_value]
    done = await domains.verify(pool, "C", "initech.example", dns)
    assert done.verified and done.verified_by == "dns"
    # another tenant cannot verify a domain, a parent or a child of one already verified
    for name in ("acme.example", "mail.acme.example"):
        await domains.add(pool, "C", name)
        with pytest.raises(DomainError, match="another tenant"):
            await domains.add(pool, "C", name, verified=True)
    with pytest.raises(DomainError, match="not a valid domain"):
        await domains.add(pool, "C", "bad domain")
    with pytest.raises(DomainError, match="unknown tenant"):
        await domains.add(pool, "nobody", "x.example")
    # a token published for another tenant's registration proves nothing for C
    other = await domains.add(pool, "B", "shared.example")
    txt[other.record_name] = [other.record_value]
    await domains.add(pool, "C", "shared.example")
    with pytest.raises(DomainError, match="does not hold"):
        await domains.verify(pool, "C", "shared.example", dns)


def _engine(cfg_file: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ENGINE_CONFIG": str(cfg_file)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], env=env, capture_output=True, timeout=60
    )


async def test_cli_domains_and_enqueue(cfg: Config, tmp_path: Path, pool: asyncpg.Pool) -> None:
    cfg_file = tmp_path / "engine.toml"
    cfg_file.write_text(
        f'[database]\ndsn = "{cfg.database.dsn}"\n[redis]\nurl = "{cfg.redis.url}"\n'
        f'prefix = "{cfg.redis.prefix}"\n'
    )
    assert _engine(cfg_file, "migrate").returncode == 0
    for t in ("A", "B"):
        assert _engine(cfg_file, "tenants", "add", t).returncode == 0
    out = _engine(cfg_file, "domains", "add", "--tenant", "A", "acme.example")
    assert out.returncode == 0
    first = out.stdout.decode().splitlines()[0]
    assert first.startswith('_penguinmails.acme.example TXT "pm-verify=')
    out = _engine(cfg_file, "domains", "add", "--tenant", "A", "acme.example", "--verified")
    assert out.returncode == 0 and out.stdout.startswith(b"verified acme.example for A")
    listed = orjson.loads(_engine(cfg_file, "domains", "list", "--json").stdout)
    assert [(d["tenant_id"], d["domain"], d["verified"]) for d in listed["domains"]] == [
        ("A", "acme.example", True)
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(job("A", 1) + b"\n" + job("B", 2) + b"\n")
    res = _engine(cfg_file, "enqueue", "--jsonl", str(jobs))
    assert res.returncode == 1 and len(res.stdout.split()) == 1
    err = orjson.loads(res.stderr.splitlines()[0])
    assert err["line"] == 2 and "belongs to another tenant" in err["error"]
    out = _engine(cfg_file, "domains", "remove", "--tenant", "A", "acme.example")
    assert out.returncode == 0
    assert _engine(cfg_file, "domains", "remove", "--tenant", "A", "acme.example").returncode == 2


async def test_a_published_dkim_key_of_ours_verifies_the_domain(
    pool: asyncpg.Pool, owned: None
) -> None:
    import os as _os

    from engine.dkim import store as dkim_store
    from engine.dkim.crypto_box import KeyBox
    from engine.dkim.keys import generate_key

    pem, txt = generate_key("ed25519")
    await dkim_store.insert_key(
        pool,
        KeyBox(_os.urandom(32)),
        tenant_id="C",
        domain="initech.example",
        selector="pm1",
        private_pem=pem,
    )
    await domains.add(pool, "C", "initech.example")
    await domains.add(pool, "B", "initech.example")
    published: dict[str, list[str]] = {}

    async def dns(name: str, rdtype: str) -> list[str]:
        return published.get(name, [])

    with pytest.raises(DomainError, match="no DKIM key"):
        await domains.verify(pool, "C", "initech.example", dns)
    published["pm1._domainkey.initech.example"] = [txt.replace("; ", ";  ")]
    with pytest.raises(DomainError):  # C's key proves nothing for B
        await domains.verify(pool, "B", "initech.example", dns)
    done = await domains.verify(pool, "C", "initech.example", dns)
    assert done.verified and done.verified_by == "dkim"


async def test_admin_routes_for_domains(pool: asyncpg.Pool, owned: None, cfg: Config) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from engine.admin.app import build_app
    from engine.admin.context import AdminContext
    from engine.queue import streams as streams_mod
    from tests.integration.test_webhooks_admin import NoRelay

    token = "t" * 32
    admin_cfg = msgspec_replace(cfg, token)
    streams = streams_mod.Streams(streams_mod.connect(admin_cfg.redis), admin_cfg.redis.prefix)
    ctx = AdminContext(
        cfg=admin_cfg, pool=pool, streams=streams, relay=NoRelay(), drain=lambda: None
    )
    auth = {"Authorization": f"Bearer {token}"}
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        r = await client.post(
            "/v1/domains", json={"tenant_id": "C", "domain": "Initech.Example"}, headers=auth
        )
        assert r.status == 201
        body = await r.json()
        assert body["domain"]["domain"] == "initech.example" and not body["domain"]["verified"]
        assert body["domain"]["record_name"] == "_penguinmails.initech.example"
        r = await client.post(
            "/v1/domains",
            json={"tenant_id": "C", "domain": "acme.example", "verified": True},
            headers=auth,
        )
        assert r.status == 400 and "another tenant" in (await r.json())["error"]
        r = await client.post(
            "/v1/domains/verify",
            json={"tenant_id": "C", "domain": "initech.example"},
            headers=auth,
        )
        assert r.status == 409
        r = await client.get("/v1/domains?tenant=C", headers=auth)
        assert [d["domain"] for d in (await r.json())["domains"]] == ["initech.example"]
        r = await client.delete("/v1/domains/initech.example?tenant=C", headers=auth)
        assert r.status == 200 and (await r.json())["removed"]
        r = await client.delete("/v1/domains/initech.example?tenant=C", headers=auth)
        assert r.status == 404
        r = await client.get("/v1/domains")
        assert r.status == 401
    finally:
        await client.close()
        await streams.client.aclose()


def msgspec_replace(cfg: Config, token: str) -> Config:
    import msgspec

    return msgspec.structs.replace(cfg, admin=msgspec.structs.replace(cfg.admin, token=token))
