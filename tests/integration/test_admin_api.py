"""The admin side-port against real PostgreSQL, Redis and a fake MailU node.

Every route is exercised with and without the token; bad input gets a 4xx with a message, never
a 5xx; enqueue → search → cancel, suppressions, senders, nodes, queues, readiness and drain.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine import metrics
from engine.admin import AdminContext, AdminServer, build_app
from engine.admin.app import ROUTES
from engine.admin.collector import Collector
from engine.config import Config
from engine.errors import ConfigError
from engine.queue import streams as streams_mod
from engine.relay.pool import RelayPool
from engine.store import tenants
from engine.tenancy import domains as sending_domains
from tests.conftest import make_config
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def admin_config(dsn: str, prefix: str, node: FakeMailU, **admin: object) -> Config:
    return make_config(
        dsn,
        prefix,
        relay={
            "nodes": [msgspec.to_builtins(node.relay_node("n1"))],
            "connect_timeout_s": 1.0,
            "command_timeout_s": 2.0,
        },
        admin={"token": TOKEN, **admin},
        queue={"max_message_bytes": 100_000},
    )


class Drains:
    """A drain callback that remembers how often it was called."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.calls = 0
        self.then = then

    def __call__(self) -> None:
        self.calls += 1
        if self.then is not None:
            self.then()


async def make_context(
    cfg: Config, pool: asyncpg.Pool, drain: Callable[[], None] | None = None
) -> tuple[AdminContext, RelayPool]:
    relay = RelayPool(cfg.relay)
    await relay.start(health_checks=False)
    streams = streams_mod.Streams(streams_mod.connect(cfg.redis), cfg.redis.prefix)
    await streams.ensure_groups()
    ctx = AdminContext(cfg=cfg, pool=pool, streams=streams, relay=relay, drain=drain or Drains())
    return ctx, relay


async def close_context(ctx: AdminContext, relay: RelayPool) -> None:
    await relay.close()
    await ctx.streams.client.aclose()


@pytest.fixture
async def admin(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> AsyncIterator[tuple[TestClient[Any, Any], AdminContext]]:
    cfg = admin_config(clean_db, redis_prefix, mailu)
    ctx, relay = await make_context(cfg, pool)
    await tenants.add(pool, "acme")
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx, max_body_bytes=200_000)))
    await client.start_server()
    try:
        yield client, ctx
    finally:
        await client.close()
        await close_context(ctx, relay)


def job(i: int, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "tenant_id": "acme",
        "idempotency_key": f"k{i}",
        "from": "news@acme.example",
        "to": f"user{i}@example.com",
        "subject": "Hello",
        "text": "Hi there",
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


async def call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    *,
    status: int,
    auth: bool = True,
    **kw: Any,
) -> Any:
    """Make a request, check the status, return the decoded JSON body."""
    headers = dict(AUTH) if auth else {}
    headers.update(kw.pop("headers", {}))
    async with client.request(method, path, headers=headers, **kw) as resp:
        body = await resp.read()
        assert resp.status == status, (method, path, resp.status, body[:500])
        if resp.content_type == "application/json":
            return orjson.loads(body)
        return body.decode()


async def enqueue(client: TestClient[Any, Any], jobs: list[dict[str, object]]) -> list[int]:
    out = await call(client, "POST", "/v1/messages", status=200, json=jobs)
    assert out["rejected"] == 0, out
    return [r["job_id"] for r in out["results"]]


def _concrete(path: str) -> str:
    return path.replace("{id}", "1").replace("{token}", "x").replace("{prefix}", "0" * 12)


# -- auth -------------------------------------------------------------------------------------


async def test_every_route_but_healthz_needs_the_token(
    admin: tuple[TestClient[Any, Any], AdminContext],
) -> None:
    client, _ = admin
    for route in ROUTES:
        path = _concrete(route.path)
        if not route.auth:
            # public routes: /healthz, and one-click unsubscribe whose HMAC token is the
            # authorisation (a made-up token is 404, never 401)
            want = 404 if path.startswith("/v1/unsubscribe/") else 200
            await call(client, route.method, path, status=want, auth=False)
            continue
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-wrong-token"},
            {"Authorization": TOKEN},
        ):
            out = await call(client, route.method, path, status=401, auth=False, headers=headers)
            assert "bearer token" in out["error"]
    # with the token, the cheap read-only routes answer 200
    for path in ("/metrics", "/openapi.json", "/v1/nodes", "/v1/queues", "/v1/messages"):
        await call(client, "GET", path, status=200)


async def test_metrics_and_openapi(admin: tuple[TestClient[Any, Any], AdminContext]) -> None:
    client, _ = admin
    text = await call(client, "GET", "/metrics", status=200)
    assert "# HELP engine_queue_depth" in text and "engine_admin_requests_total" in text
    doc = await call(client, "GET", "/openapi.json", status=200)
    assert doc["openapi"].startswith("3.1")
    served = {(r.method, r.path) for r in ROUTES}
    registered = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()  # type: ignore[union-attr]
        if r.resource is not None
    }
    assert served == registered
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served
    post = doc["paths"]["/v1/messages"]["post"]
    assert "requestBody" in post and "401" in post["responses"]
    assert "Job" in doc["components"]["schemas"]


# -- messages ---------------------------------------------------------------------------------


async def test_enqueue_mixed_batch_then_search(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, _ = admin
    batch = [
        job(0),
        job(1, to="not-an-address"),
        job(2, tenant_id="ghost"),
        {"tenant_id": "acme"},  # missing fields
        42,  # not an object
        job(5, subject="line\nbreak"),
        job(6, to="Someone@Example.com"),
    ]
    out = await call(client, "POST", "/v1/messages", status=200, json=batch)
    assert (out["accepted"], out["rejected"]) == (2, 5)
    results = out["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert results[0]["job_id"] and results[0]["created"]
    assert "ghost" in results[2]["error"] and "engine tenants add" in results[2]["error"]
    assert all("error" in results[i] for i in (1, 2, 3, 4, 5))
    assert await pool.fetchval("SELECT count(*) FROM queue.jobs") == 2
    # the envelope form, and idempotency: the same key gives the same id, not a new job
    again = await call(client, "POST", "/v1/messages", status=200, json={"messages": [job(0)]})
    assert again["results"][0]["job_id"] == results[0]["job_id"]
    assert "created" not in again["results"][0]
    # search finds it: the recipient as submitted, or lower-cased
    found = await call(client, "GET", "/v1/messages?recipient=USER0@example.com", status=200)
    assert [m["id"] for m in found["messages"]] == [results[0]["job_id"]]
    assert found["messages"][0]["state"] == "queued" and found["next"] is None
    found = await call(client, "GET", "/v1/messages?recipient=Someone@Example.com", status=200)
    assert [m["id"] for m in found["messages"]] == [results[6]["job_id"]]
    one = await call(client, "GET", f"/v1/messages/{results[0]['job_id']}", status=200)
    assert one["recipient"] == "user0@example.com" and one["priority"] == "normal"
    await call(client, "GET", "/v1/messages/999999", status=404)
    await call(client, "GET", f"/v1/messages/{results[0]['job_id']}?tenant=other", status=404)
    # everything refused: 422, nothing stored
    none = await call(client, "POST", "/v1/messages", status=422, json=[job(9, to="bad")])
    assert none["accepted"] == 0


async def test_search_filters_and_keyset_pages(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, _ = admin
    ids = await enqueue(client, [job(i) for i in range(25)])
    await pool.execute(
        "UPDATE queue.jobs SET state = 'relayed', message_id = '<m1@acme.example>' WHERE id = $1",
        ids[3],
    )
    seen: list[int] = []
    after = ""
    pages = 0
    while True:
        page = await call(client, "GET", f"/v1/messages?tenant=acme&limit=10{after}", status=200)
        seen += [m["id"] for m in page["messages"]]
        pages += 1
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert pages == 3 and seen == sorted(ids, reverse=True)
    relayed = await call(client, "GET", "/v1/messages?state=relayed", status=200)
    assert [m["id"] for m in relayed["messages"]] == [ids[3]]
    for mid in ("m1@acme.example", "<m1@acme.example>"):
        by_mid = await call(client, "GET", f"/v1/messages?message_id={mid}", status=200)
        assert [m["id"] for m in by_mid["messages"]] == [ids[3]]
    nobody = await call(client, "GET", "/v1/messages?tenant=other", status=200)
    assert nobody == {"messages": [], "next": None}


async def test_bad_input_is_4xx_with_a_message(
    admin: tuple[TestClient[Any, Any], AdminContext],
) -> None:
    client, _ = admin
    cases: list[tuple[str, str, int, dict[str, Any]]] = [
        ("POST", "/v1/messages", 400, {"data": b"{not json"}),
        ("POST", "/v1/messages", 400, {"data": b""}),
        ("POST", "/v1/messages", 400, {"json": []}),
        ("POST", "/v1/messages", 400, {"json": {"messages": "x"}}),
        ("POST", "/v1/messages", 400, {"json": {"jobs": []}}),
        ("POST", "/v1/messages", 400, {"json": "a string"}),
        ("POST", "/v1/messages", 413, {"data": b"[" + b" " * 300_000 + b"]"}),
        ("GET", "/v1/messages?limit=0", 400, {}),
        ("GET", "/v1/messages?limit=abc", 400, {}),
        ("GET", "/v1/messages?limit=5000", 400, {}),
        ("GET", "/v1/messages?state=lost", 400, {}),
        ("GET", "/v1/messages?tenat=acme", 400, {}),
        ("GET", "/v1/messages?after=-3", 400, {}),
        ("GET", "/v1/messages?tenant=a&tenant=b", 400, {}),
        ("GET", "/v1/messages?recipient=a%00b", 400, {}),
        ("GET", "/v1/messages/abc", 400, {}),
        ("DELETE", "/v1/messages/1x", 400, {}),
        ("GET", "/v1/nodes?probe=maybe", 400, {}),
        ("GET", "/v1/queues?tenants=-1", 400, {}),
        ("GET", "/v1/suppressions", 400, {}),
        ("POST", "/v1/suppressions", 400, {"json": {"tenant_id": "acme"}}),
        ("POST", "/v1/suppressions", 400, {"json": {"tenant_id": "acme", "address": "nope"}}),
        (
            "POST",
            "/v1/suppressions",
            400,
            {"json": {"tenant_id": "acme", "address": "a@b.example", "ttl_s": -1}},
        ),
        ("POST", "/v1/suppressions", 400, {"json": {"tenant_id": "acme", "address": 5}}),
        ("DELETE", "/v1/suppressions?tenant=acme", 400, {}),
        ("POST", "/v1/senders/a@b.example/pause", 400, {"json": {"why": "x"}}),
        ("GET", "/v1/nowhere", 404, {}),
        ("PUT", "/v1/messages", 405, {}),
    ]
    for method, path, status, kw in cases:
        out = await call(client, method, path, status=status, **kw)
        assert isinstance(out, dict) and out["error"], (method, path, out)
    out = await call(client, "GET", "/v1/messages?limit=abc", status=400)
    assert "limit" in out["error"]
    out = await call(client, "GET", "/v1/messages?tenat=acme", status=400)
    assert "tenat" in out["error"]


async def test_cancel(admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool) -> None:
    client, _ = admin
    a, b, c = await enqueue(client, [job(1), job(2), job(3)])
    out = await call(client, "DELETE", f"/v1/messages/{a}", status=200)
    assert out == {"id": a, "state": "cancelled"}
    await call(client, "DELETE", f"/v1/messages/{a}", status=200)  # idempotent
    await pool.execute("UPDATE queue.jobs SET state = 'relayed' WHERE id = $1", b)
    out = await call(client, "DELETE", f"/v1/messages/{b}", status=409)
    assert "already relayed" in out["error"]
    await pool.execute("UPDATE queue.jobs SET state = 'sending' WHERE id = $1", c)
    out = await call(client, "DELETE", f"/v1/messages/{c}", status=409)
    assert "relay node right now" in out["error"]
    await call(client, "DELETE", "/v1/messages/424242", status=404)
    await call(client, "DELETE", f"/v1/messages/{a}?tenant=other", status=404)
    states = {r["id"]: r["state"] for r in await pool.fetch("SELECT id, state FROM queue.jobs")}
    assert states == {a: "cancelled", b: "relayed", c: "sending"}


# -- suppressions -----------------------------------------------------------------------------


async def test_suppressions_crud(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, _ = admin
    one = {"tenant_id": "acme", "address": "Bob@Example.com", "reason": "userunknown"}
    assert await call(client, "POST", "/v1/suppressions", status=201, json=one) == {"written": 1}
    many = [
        {"tenant_id": "acme", "address": f"u{i:02d}@example.com", "ttl_s": 3600} for i in range(12)
    ]
    assert (await call(client, "POST", "/v1/suppressions", status=201, json=many))["written"] == 12
    out = await call(
        client,
        "POST",
        "/v1/suppressions",
        status=400,
        json={"tenant_id": "ghost", "address": "x@y.example"},
    )
    assert "ghost" in out["error"]
    listed: list[str] = []
    after = ""
    while True:
        page = await call(client, "GET", f"/v1/suppressions?tenant=acme&limit=5{after}", status=200)
        listed += [s["address"] for s in page["suppressions"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert listed == sorted(["bob@example.com", *(f"u{i:02d}@example.com" for i in range(12))])
    first = (await call(client, "GET", "/v1/suppressions?tenant=acme&limit=1", status=200))[
        "suppressions"
    ][0]
    assert first["source"] == "operator" and first["reason"] == "userunknown"
    assert first["expires_at"] is None
    out = await call(
        client, "DELETE", "/v1/suppressions?tenant=acme&address=BOB@example.com", status=200
    )
    assert out == {"tenant_id": "acme", "address": "bob@example.com", "removed": True}
    await call(client, "DELETE", "/v1/suppressions?tenant=acme&address=bob@example.com", status=404)
    assert await pool.fetchval("SELECT count(*) FROM oltp.suppressions") == 12


# -- senders ----------------------------------------------------------------------------------


async def test_pause_and_resume_sender(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, _ = admin
    (held, scheduled) = await enqueue(
        client,
        [job(1), job(2, send_at=(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat())],
    )
    out = await call(
        client, "POST", "/v1/senders/News@acme.example/pause", status=200, json={"reason": "spike"}
    )
    assert out["sender"] == {
        "tenant_id": "acme",
        "address": "news@acme.example",
        "domain": "acme.example",
        "paused": True,
        "paused_reason": "spike",
    }
    assert await pool.fetchval(
        "SELECT paused FROM oltp.senders WHERE address = 'news@acme.example'"
    )
    # as the dispatcher holds a paused sender's job: back to the queue, five minutes out
    await pool.execute(
        "UPDATE queue.jobs SET last_reply = 'sender is paused',"
        " next_attempt_at = now() + interval '5 minutes' WHERE id = $1",
        held,
    )
    out = await call(client, "POST", "/v1/senders/news@acme.example/resume", status=200)
    assert out["sender"]["paused"] is False and out["released"] == 1
    due = await pool.fetchval(  # within the dispatcher's paused-sender refresh + 1 s
        "SELECT next_attempt_at <= now() + interval '7 seconds' FROM queue.jobs WHERE id = $1",
        held,
    )
    later = await pool.fetchval(
        "SELECT next_attempt_at > now() + interval '50 minutes' FROM queue.jobs WHERE id = $1",
        scheduled,
    )
    assert due and later  # the scheduled send keeps its time
    # The same event and audit rows as `engine shaping pause|resume` (test_shaping_cli).
    kinds = await pool.fetch("SELECT kind FROM oltp.events WHERE kind LIKE 'sender_%' ORDER BY id")
    assert [r["kind"] for r in kinds] == ["sender_paused", "sender_resumed"]
    audit = await pool.fetch(
        "SELECT actor, action, target FROM oltp.audit_log WHERE action LIKE 'sender.%' ORDER BY id"
    )
    assert [tuple(r.values()) for r in audit] == [
        ("admin-api", "sender.pause", "news@acme.example"),
        ("admin-api", "sender.resume", "news@acme.example"),
    ]
    # pause without a body uses the default reason
    out = await call(client, "POST", "/v1/senders/news@acme.example/pause?tenant=acme", status=200)
    assert out["sender"]["paused_reason"] == "paused by an operator"
    await call(client, "POST", "/v1/senders/nobody@acme.example/pause", status=404)
    await call(client, "POST", "/v1/senders/news@acme.example/pause?tenant=zzz", status=404)
    # the same address used by two tenants: the tenant must be named
    # Two tenants with one address: data from before sending domains belonged to one tenant
    # (enqueue refuses it now), still handled by the routes.
    await tenants.add(pool, "beta")
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain)"
        " VALUES ('beta', 'news@acme.example', 'acme.example')"
    )
    out = await call(client, "POST", "/v1/senders/news@acme.example/resume", status=409)
    assert "acme" in out["error"] and "beta" in out["error"] and "tenant" in out["error"]
    await call(client, "POST", "/v1/senders/news@acme.example/resume?tenant=beta", status=200)


# -- nodes, queues, readiness, drain ----------------------------------------------------------


async def test_nodes_and_queues(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, ctx = admin
    out = await call(client, "GET", "/v1/nodes", status=200)
    assert out["available"] is True
    (node,) = out["nodes"]
    assert node["name"] == "n1" and node["breaker"] == "closed"
    probed = await call(client, "GET", "/v1/nodes?probe=true", status=200)
    assert probed["nodes"][0]["healthy"] is True
    await enqueue(client, [job(i) for i in range(3)] + [job(9, priority="high")])
    await pool.execute("UPDATE queue.jobs SET next_attempt_at = now() - interval '90 seconds'")
    await ctx.streams.push([(1, "acme", 0), (2, "acme", 1)])
    out = await call(client, "GET", "/v1/queues", status=200)
    assert out["streams"] == {"high": 1, "normal": 1, "low": 0}
    assert out["states"] == {"queued": 4, "deferred": 0, "sending": 0}  # no finished-job scan
    assert out["backlog"]["queued"] == {"high": 1, "normal": 3, "low": 0} and out["held"] == 0
    every = await call(client, "GET", "/v1/queues?all=true&tenants=0", status=200)
    assert every["states"]["queued"] == 4 and every["states"]["relayed"] == 0
    assert out["tenants"] == [{"tenant_id": "acme", "queued": 4, "deferred": 0, "sending": 0}]
    assert 85 <= out["oldest_due_age_s"]["normal"] < 300 and out["oldest_due_age_s"]["low"] == 0
    out = await call(client, "GET", "/v1/queues?tenants=0", status=200)
    assert out["tenants"] == []


async def test_readyz_follows_the_relay_node(
    admin: tuple[TestClient[Any, Any], AdminContext], mailu: FakeMailU
) -> None:
    client, _ = admin
    out = await call(client, "GET", "/readyz", status=200)
    assert out["ready"] is True
    assert out["checks"] == {"postgresql": "ok", "redis": "ok", "relay": "1/1 nodes reachable"}
    mailu.stop()
    out = await call(client, "GET", "/readyz", status=503)
    assert out["ready"] is False and out["checks"]["postgresql"] == "ok"
    assert out["checks"]["relay"].startswith("error: no relay node reachable")
    mailu.start()
    await call(client, "GET", "/readyz", status=200)


async def test_extra_probe_and_drain(admin: tuple[TestClient[Any, Any], AdminContext]) -> None:
    client, ctx = admin

    async def inbound() -> object:
        raise RuntimeError("listener not bound")

    ctx.ready = [("inbound", inbound)]
    out = await call(client, "GET", "/readyz", status=503)
    assert out["checks"]["inbound"] == "error: listener not bound"
    ctx.ready = []
    drains = ctx.drain
    assert isinstance(drains, Drains)
    assert await call(client, "POST", "/v1/drain", status=202) == {"draining": True}
    assert await call(client, "POST", "/v1/drain", status=202) == {"draining": True}
    assert drains.calls == 1
    out = await call(client, "GET", "/readyz", status=503)
    assert out["draining"] is True and out["ready"] is False
    await call(client, "GET", "/healthz", status=200, auth=False)


async def test_collector_sets_gauges(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, ctx = admin
    await enqueue(client, [job(1)])
    await pool.execute("UPDATE queue.jobs SET next_attempt_at = now() - interval '1 minute'")
    await ctx.streams.push([(1, "acme", 2)])
    await Collector(ctx).collect()
    assert metrics.QUEUE_DEPTH.labels("low")._value.get() == 1
    assert metrics.QUEUE_OLDEST_AGE.labels("normal")._value.get() >= 59
    assert metrics.RELAY_NODE_UP.labels("n1")._value.get() == 1
    assert metrics.DB_POOL_CONNECTIONS.labels("max")._value.get() == 5


# -- the real listener ------------------------------------------------------------------------


async def test_server_binds_and_enforces_the_exposure_rule(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    cfg = admin_config(clean_db, redis_prefix, mailu, listen="127.0.0.1:0")
    ctx, relay = await make_context(cfg, pool)
    try:
        server = AdminServer(ctx)
        host, port = await server.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://{host}:{port}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"http://{host}:{port}/v1/queues") as resp:
                    assert resp.status == 401
                async with http.get(f"http://{host}:{port}/v1/queues", headers=AUTH) as resp:
                    assert resp.status == 200
        finally:
            await server.close()
        refused = [
            {"listen": "0.0.0.0:0", "token": None},  # open network port without a token
            {"listen": "127.0.0.1:0", "token": "short"},
            {"listen": "no-port", "token": TOKEN},
        ]
        loose = tmp_path / "token"
        loose.write_text(TOKEN)
        os.chmod(loose, 0o644)
        refused.append({"listen": "127.0.0.1:0", "token": None, "token_file": str(loose)})
        for admin_cfg in refused:
            bad = make_config(clean_db, redis_prefix, admin=admin_cfg)
            ctx.cfg = bad
            with pytest.raises(ConfigError):
                AdminServer(ctx)
        os.chmod(loose, 0o600)
        ctx.cfg = make_config(
            clean_db, redis_prefix, admin={"listen": "127.0.0.1:0", "token_file": str(loose)}
        )
        AdminServer(ctx)  # a 0600 token file is fine
        ctx.cfg = make_config(clean_db, redis_prefix, admin={"listen": "127.0.0.1:0"})
        server = AdminServer(ctx)  # loopback without a token: allowed, with a warning
        host, port = await server.start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://{host}:{port}/v1/queues") as resp,
            ):
                assert resp.status == 200
        finally:
            await server.close()
    finally:
        await close_context(ctx, relay)


async def test_non_ascii_digits_in_an_id_are_a_400(
    admin: tuple[TestClient[Any, Any], AdminContext],
) -> None:
    client, _ = admin
    # "³".isdigit() is True but int("³") raises: found by schemathesis (was a 500)
    for path in ("/v1/messages/%C2%B3", "/v1/messages/%D9%A3"):
        out = await call(client, "GET", path, status=400)
        assert "positive integer" in out["error"]


async def test_nodes_check_runs_engine_nodes_check(
    admin: tuple[TestClient[Any, Any], AdminContext], pool: asyncpg.Pool
) -> None:
    client, _ = admin
    await pool.execute(
        "INSERT INTO oltp.senders (tenant_id, address, domain)"
        " VALUES ('acme', 'news@shop.example', 'shop.example')"
    )
    doc = await call(client, "GET", "/v1/nodes/check?timeout_s=5", status=200)
    assert doc["ok"] is True and [n["name"] for n in doc["nodes"]] == ["n1"]
    probes = doc["nodes"][0]["probes"]
    assert [(p["what"], p["tenant_id"], p["ok"]) for p in probes] == [
        ("verp", None, True),
        ("sender", "acme", True),
    ]
    assert doc["nodes"][0]["capabilities"]["DSN"] is False  # the fake offers none
    one = await call(client, "GET", "/v1/nodes/n1/check?timeout_s=5", status=200)
    assert [n["name"] for n in one["nodes"]] == ["n1"]
    missing = await call(client, "GET", "/v1/nodes/nope/check", status=404)
    assert "no relay node named 'nope'" in missing["error"]
    await call(client, "GET", "/v1/nodes/check?timeout_s=0", status=400)
    await call(client, "GET", "/v1/nodes/check", status=401, auth=False)
    spec = await call(client, "GET", "/openapi.json", status=200)
    assert "/v1/nodes/{name}/check" in spec["paths"] and "/v1/nodes/check" in spec["paths"]


async def test_timeline_content_and_bulk_actions(
    admin: tuple[TestClient[Any, Any], AdminContext],
) -> None:
    client, ctx = admin
    ids = await enqueue(client, [job(i, campaign_id="spring") for i in range(3)] + [job(9)])
    body = {"action": "hold", "campaign_id": "spring", "dry_run": True}
    dry = await call(client, "POST", "/v1/messages/actions", status=200, json=body)
    assert (dry["affected"], dry["in_flight"], dry["dry_run"]) == (3, 0, True)
    body = {"action": "cancel", "campaign_id": "spring", "domain": "EXAMPLE.com"}
    done = await call(client, "POST", "/v1/messages/actions", status=200, json=body)
    assert done["affected"] == 3 and done["selection"]["campaign_id"] == "spring"
    again = await call(client, "POST", "/v1/messages/actions", status=200, json=body)
    assert again["affected"] == 0  # already cancelled
    for bad in ({"action": "cancel"}, {"action": "explode", "job_id": 1},
                {"action": "hold", "job_id": 0}, {"action": "hold", "tenant": "acme"}):  # fmt: skip
        await call(client, "POST", "/v1/messages/actions", status=400, json=bad)
    out = await call(client, "GET", f"/v1/messages/{ids[0]}?content=true", status=200)
    assert out["state"] == "cancelled" and out["recipient"] == "user0@example.com"
    kinds = [(e["kind"], (e.get("data") or {}).get("by")) for e in out["events"]]
    assert kinds == [("queued", None), ("cancelled", "admin-api")]
    assert "Subject: Hello" in out["content"] and "Hi there" in out["content"]
    plain = await call(client, "GET", f"/v1/messages/{ids[3]}", status=200)
    assert plain["content"] is None and plain["state"] == "queued"
    await call(client, "GET", f"/v1/messages/{ids[3]}?content=maybe", status=400)
    await call(client, "GET", f"/v1/messages/{ids[3]}?tenant=other", status=404)
    await ctx.pool.execute("DELETE FROM content.email_content")  # as retention does
    await call(client, "GET", f"/v1/messages/{ids[3]}?content=true", status=410)
    rows = await ctx.pool.fetch(
        "SELECT action, actor FROM oltp.audit_log WHERE action LIKE 'messages.%' ORDER BY id"
    )
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("messages.cancel", "admin-api"),
        ("messages.cancel", "admin-api"),
    ]
