"""Tenant A's API keys against every admin route, with tenant B's ids: 403 or 404, never data.

The routes are enumerated from the aiohttp router of the real app, so a route added later is
covered without touching this file; a route the router serves but the route table does not
declare (no access rule) fails :func:`test_every_served_route_declares_who_may_call_it`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.admin.app import ROUTES
from engine.keys.token import GRANTS, Access, Scope
from engine.store import messages as message_store
from tests.fakes.fixtures import mailu
from tests.security.keyed_admin import MARKER, OPERATOR, Keyed, job, keyed, request

__all__ = ["keyed", "mailu"]

DECLARED = {(r.method, r.path): r for r in ROUTES}


async def test_every_served_route_declares_who_may_call_it(keyed: Keyed) -> None:
    assert all(isinstance(r.access, Access) for r in ROUTES)
    app = keyed.client.server.app
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert len(served) >= 20
    undeclared = sorted(served - DECLARED.keys())
    assert not undeclared, f"routes served without a declared access rule: {undeclared}"


def _target(k: Keyed, method: str, path: str) -> tuple[str, dict[str, str], Any]:
    """The request aimed at tenant B's objects: path, query, JSON body (None: no body)."""
    b = k.b
    filled = (
        path.replace("{prefix}", b.prefixes["manage"])
        .replace("{token}", "x")
        .replace("{domain}", "tb.example")
        .replace("{name}", "node-1")
        .replace("{campaign_id}", "spring")
        .replace("{id}", str(b.webhook if path.startswith("/v1/webhooks") else b.jobs[0]))
    )
    if path.startswith("/v1/senders/"):
        filled = path.replace("{id}", "news@tb.example")
    route = DECLARED[(method, path)]
    names = {f.name for f in msgspec.structs.fields(route.query)} if route.query else set()
    query = {"tenant": "tb"} if "tenant" in names else {}
    if path == "/v1/suppressions" and method == "DELETE":
        query["address"] = f"gone-tb-{MARKER}@example.com"
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/messages"): [job("tb", 99)],
        ("POST", "/v1/suppressions"): {"tenant_id": "tb", "address": "planted@example.com"},
        ("POST", "/v1/webhooks"): {"tenant_id": "tb", "url": "https://hooks.example/planted"},
        ("POST", "/v1/keys"): {"tenant_id": "tb", "scope": "manage"},
        ("POST", "/v1/inbound/requeue"): {"ids": [1]},
        ("PUT", "/v1/campaigns/{campaign_id}"): {"tenant_id": "tb", "subject": "s", "text": "t"},
    }
    return filled, query, bodies.get((method, path))


@pytest.mark.parametrize("scope", [s.value for s in Scope])
async def test_a_tenant_key_never_reaches_another_tenants_data(keyed: Keyed, scope: str) -> None:
    k = keyed
    findings: list[str] = []
    for method, path in sorted(DECLARED):
        route = DECLARED[(method, path)]
        if route.access is Access.PUBLIC:
            continue
        filled, query, body = _target(k, method, path)
        for q in (query, {}):  # with ?tenant=tb, and without (the key's own tenant)
            if path.startswith("/v1/suppressions") and not q and query:
                q = {**query, "tenant": "ta"} if method == "GET" else q
            status, raw, _ = await request(
                k.client, method, filled, k.a.auth(scope), params=q,
                **({"json": body} if body is not None else {}),
            )  # fmt: skip
            where = f"{scope} key: {method} {filled}?{q} -> {status} {raw[:200]!r}"
            if MARKER.encode() in raw or b'"tenant_id":"tb"' in raw:
                findings.append(f"LEAK {where}")
            if status >= 500:
                findings.append(f"5xx {where}")
            aimed_at_b = q.get("tenant") == "tb" or body is not None or "{" in path
            if route.access not in GRANTS[Scope(scope)]:
                if status != 403:
                    findings.append(f"expected 403 {where}")
            elif aimed_at_b and 200 <= status < 300:
                findings.append(f"2xx on B's object {where}")  # must look as if B did not exist
    assert not findings, "\n".join(findings)
    # B is untouched: jobs queued, suppression, webhook, keys, sender, no drain.
    assert not k.ctx.draining
    for job_id in k.b.jobs:
        view = await message_store.get(k.pool, job_id)
        assert view is not None and view.state == "queued"
    assert (
        await k.pool.fetchval("SELECT count(*) FROM oltp.suppressions WHERE tenant_id = 'tb'") == 1
    )
    assert (
        await k.pool.fetchval("SELECT count(*) FROM oltp.webhook_endpoints WHERE tenant_id = 'tb'")
        == 1
    )
    assert (
        await k.pool.fetchval(
            "SELECT count(*) FROM oltp.api_keys WHERE tenant_id = 'tb' AND revoked_at IS NULL"
        )
        == 3
    )
    assert not await k.pool.fetchval(
        "SELECT coalesce(bool_or(paused), false) FROM oltp.senders WHERE tenant_id = 'tb'"
    )
    assert await k.pool.fetchval("SELECT count(*) FROM queue.jobs WHERE tenant_id = 'tb'") == 3


async def test_a_tenant_key_works_on_its_own_tenant(keyed: Keyed) -> None:
    k, a = keyed, keyed.a
    # send: enqueue (tenant from the key: a job naming another tenant is that job's error)
    status, raw, _ = await request(
        k.client, "POST", "/v1/messages", a.auth("send"), json=[job("ta", 10), job("tb", 11)]
    )
    out = msgspec.json.decode(raw)
    assert status == 200 and out["accepted"] == 1 and out["rejected"] == 1, out
    assert out["results"][1]["error"] == "unknown tenant 'tb' (add it with: engine tenants add tb)"
    new_id = out["results"][0]["job_id"]
    # read: search and look up, own tenant only (no ?tenant= needed)
    status, raw, _ = await request(k.client, "GET", "/v1/messages", a.auth("read"))
    found = msgspec.json.decode(raw)["messages"]
    assert status == 200 and {m["tenant_id"] for m in found} == {"ta"} and len(found) == 4
    status, _, _ = await request(k.client, "GET", f"/v1/messages/{new_id}", a.auth("read"))
    assert status == 200
    # send: cancel own
    status, raw, _ = await request(k.client, "DELETE", f"/v1/messages/{new_id}", a.auth("send"))
    assert status == 200, raw
    # manage: webhooks and suppressions of its own tenant, tenant_id implied
    status, raw, _ = await request(
        k.client, "POST", "/v1/webhooks", a.auth("manage"),
        json={"url": "https://hooks.example/ta/new"},
    )  # fmt: skip
    assert status == 201, raw
    status, raw, _ = await request(
        k.client, "DELETE", f"/v1/webhooks/{a.webhook}", a.auth("manage")
    )
    assert status == 200, raw
    status, raw, _ = await request(k.client, "GET", "/v1/webhooks", a.auth("read"))
    hooks = msgspec.json.decode(raw)["webhooks"]
    assert [h["url"] for h in hooks] == ["https://hooks.example/ta/new"]
    status, raw, _ = await request(
        k.client, "POST", "/v1/senders/news@ta.example/pause", a.auth("manage")
    )
    assert status == 200, raw
    # scopes: read cannot enqueue, send cannot read, manage cannot enqueue or drain
    for scope, method, path in (
        ("read", "POST", "/v1/messages"),
        ("send", "GET", "/v1/messages"),
        ("manage", "POST", "/v1/messages"),
        ("manage", "POST", "/v1/drain"),
        ("read", "GET", "/metrics"),
    ):
        status, raw, _ = await request(k.client, method, path, a.auth(scope), json=[job("ta", 1)])
        assert status == 403, (scope, method, path, status, raw)
    # the operator token still sees everything
    status, raw, _ = await request(k.client, "GET", "/v1/messages", OPERATOR)
    assert {m["tenant_id"] for m in msgspec.json.decode(raw)["messages"]} == {"ta", "tb"}
