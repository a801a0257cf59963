"""``/v1/webhooks`` on the admin app: token required, allow-list enforced with a clear 400, the
secret answered once and never listed, delete then 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.admin import AdminContext, build_app
from engine.config import Config
from engine.queue import streams as streams_mod
from engine.relay.results import NodeStatus
from engine.store import tenants
from tests.conftest import make_config

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class NoRelay:
    """The admin context's relay view; these routes never use it."""

    def snapshot(self) -> list[NodeStatus]:
        return []

    async def check_health(self) -> list[NodeStatus]:
        return []


@pytest.fixture
async def client(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool
) -> AsyncIterator[TestClient[Any, Any]]:
    cfg: Config = make_config(
        clean_db,
        redis_prefix,
        admin={"token": TOKEN},
        events={
            "webhook_allow": ["127.0.0.1", "*.hooks.example.com"],
            "webhook_allow_cidrs": ["127.0.0.1/32"],
            "webhook_ports": [80, 443, 9],
        },
    )
    streams = streams_mod.Streams(streams_mod.connect(cfg.redis), cfg.redis.prefix)
    ctx = AdminContext(cfg=cfg, pool=pool, streams=streams, relay=NoRelay(), drain=lambda: None)
    await tenants.add(pool, "acme")
    c: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await streams.client.aclose()


async def call(
    c: TestClient[Any, Any], method: str, path: str, status: int, *, auth: bool = True, **kw: Any
) -> Any:
    async with c.request(method, path, headers=AUTH if auth else {}, **kw) as resp:
        body = await resp.read()
        assert resp.status == status, (method, path, resp.status, body[:300])
        return orjson.loads(body)


async def test_webhook_routes_need_the_token(client: TestClient[Any, Any]) -> None:
    for method, path in (
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("DELETE", "/v1/webhooks/1"),
    ):
        out = await call(client, method, path, 401, auth=False, json={})
        assert "bearer token" in out["error"]


async def test_create_list_delete(client: TestClient[Any, Any]) -> None:
    body = {"tenant_id": "acme", "url": "https://a.hooks.example.com/pm", "kinds": ["bounced"]}
    created = await call(client, "POST", "/v1/webhooks", 201, json=body)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    hook = created["webhook"]
    assert hook["kinds"] == ["bounced"] and hook["active"] and "secret" not in hook
    mine = await call(
        client,
        "POST",
        "/v1/webhooks",
        201,
        json={"tenant_id": "acme", "url": "http://127.0.0.1:9/x", "secret": "s" * 20},
    )
    assert mine["secret"] == "s" * 20
    listed = await call(client, "GET", "/v1/webhooks?tenant=acme", 200)
    assert [w["id"] for w in listed["webhooks"]] == [hook["id"], mine["webhook"]["id"]]
    raw = orjson.dumps(listed)
    assert secret.encode() not in raw and b"s" * 20 not in raw
    assert (await call(client, "GET", "/v1/webhooks?tenant=other", 200))["webhooks"] == []
    gone = await call(client, "DELETE", f"/v1/webhooks/{hook['id']}", 200)
    assert gone["removed"] and gone["webhook"]["id"] == hook["id"]
    out = await call(client, "DELETE", f"/v1/webhooks/{hook['id']}", 404)
    assert "no webhook endpoint" in out["error"]
    await call(client, "DELETE", "/v1/webhooks/abc", 400)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "http://10.0.0.5/hook"}, "'10.0.0.5' is not allow-listed"),
        ({"url": "http://127.0.0.1:8025/v1/drain"}, "port 8025 is not allowed"),
        ({"url": "https://hooks.example.com.evil.net/x"}, "not allow-listed"),
        ({"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
        ({"url": "http://127.0.0.1:99999/x"}, "cannot be parsed"),
        ({"url": "http://127.0.0.1/x", "kinds": ["opened"]}, "kinds"),  # no such kind
        ({"url": "http://127.0.0.1/x", "tenant_id": "nobody"}, "unknown tenant 'nobody'"),
        ({"url": "http://127.0.0.1/x", "secret": "short"}, "secret"),
    ],
)
async def test_refused_with_a_clear_400(
    client: TestClient[Any, Any], body: dict[str, Any], needle: str
) -> None:
    out = await call(client, "POST", "/v1/webhooks", 400, json={"tenant_id": "acme", **body})
    assert needle in out["error"]
    assert (await call(client, "GET", "/v1/webhooks", 200))["webhooks"] == []


async def test_openapi_documents_the_webhook_routes(client: TestClient[Any, Any]) -> None:
    doc = await call(client, "GET", "/openapi.json", 200)
    assert {"get", "post"} <= set(doc["paths"]["/v1/webhooks"])
    assert "delete" in doc["paths"]["/v1/webhooks/{id}"]
    assert "WebhookIn" in doc["components"]["schemas"]
