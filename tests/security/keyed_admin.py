"""Two tenants with data and API keys of every scope, behind the real admin app (shared fixture).

Tenant ``ta`` is the attacker, ``tb`` the victim; every one of ``tb``'s rows carries
:data:`MARKER` so a test can assert that nothing of it reached ``ta``'s answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.admin import AdminContext, build_app
from engine.config import Config
from engine.enqueue import enqueue
from engine.events import webhooks
from engine.events.ssrf import Policy
from engine.keys import service
from engine.store import suppressions, tenants
from engine.tenancy import domains
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU
from tests.integration.test_admin_api import TOKEN, close_context, make_context

MARKER = "tbmarker"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def keyed_config(dsn: str, prefix: str, node: FakeMailU, **admin: object) -> Config:
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
        events={"webhook_allow": ["hooks.example"]},
    )


def job(tenant: str, i: int, **over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "tenant_id": tenant,
        "idempotency_key": f"{tenant}-{i}",
        "from": f"news@{tenant}.example",
        "to": f"{tenant}-{MARKER if tenant == 'tb' else 'user'}{i}@example.com",
        "subject": "Hello",
        "text": "Hi there",
    }
    doc.update(over)
    return doc


@dataclass
class Tenant:
    """One tenant's ids and keys (``keys[scope]`` is the full key)."""

    name: str
    jobs: list[int] = field(default_factory=list)
    webhook: int = 0
    keys: dict[str, str] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@dataclass
class Keyed:
    client: TestClient[Any, Any]
    ctx: AdminContext
    pool: asyncpg.Pool
    a: Tenant
    b: Tenant


async def populate(pool: asyncpg.Pool, name: str) -> Tenant:
    t = Tenant(name)
    mark = MARKER if name == "tb" else "own"
    await tenants.add(pool, name)
    await domains.add(pool, name, f"{name}.example", verified=True)
    res = await enqueue(
        pool, [orjson.dumps(job(name, i)) for i in range(3)], max_message_bytes=10**6,
        max_age_s=3600,
    )  # fmt: skip
    t.jobs = [r.job_id for r in res if r.job_id is not None]
    await suppressions.add(pool, [(name, f"gone-{name}-{mark}@example.com", "x", "operator", None)])
    endpoint, _ = await webhooks.create(
        pool,
        tenant_id=name,
        url=f"https://hooks.example/{name}/{mark}",
        policy=Policy(hosts=("hooks.example",)),
    )
    t.webhook = endpoint.id
    for scope in ("send", "read", "manage"):
        key, view = await service.create(pool, name, scope, actor="test", name=f"{name}-{scope}")
        t.keys[scope] = key
        t.prefixes[scope] = view.prefix
    return t


@pytest.fixture
async def keyed(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> AsyncIterator[Keyed]:
    cfg = keyed_config(clean_db, redis_prefix, mailu)
    ctx, relay = await make_context(cfg, pool)
    a = await populate(pool, "ta")
    b = await populate(pool, "tb")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx, max_body_bytes=200_000)))
    await client.start_server()
    try:
        yield Keyed(client, ctx, pool, a, b)
    finally:
        await client.close()
        await close_context(ctx, relay)


async def request(
    client: TestClient[Any, Any], method: str, path: str, headers: dict[str, str], **kw: Any
) -> tuple[int, bytes, Any]:
    async with client.request(method, path, headers=headers, **kw) as resp:
        return resp.status, await resp.read(), resp.headers
