"""The admin API under the database's tenant rules: a tenant key's requests run as ``engine_api``
with the key's tenant set by ``engine.set_tenant`` (``[database] role`` on, as in conftest.py).

The application filters by the key's tenant too; to show the database layer holds on its own,
:func:`test_the_database_limits_a_key_even_when_the_app_filter_is_gone` removes that filter
(``tenant_scope`` answers "no filter", as an application bug would) and tenant B's rows still
do not come back through tenant A's key.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from engine.admin.routes import keys, messages, suppressions, webhooks
from engine.events import webhooks as webhook_store
from engine.store import messages as message_store
from engine.store import suppressions as suppression_store
from tests.fakes.fixtures import mailu
from tests.security.keyed_admin import MARKER, OPERATOR, Keyed, keyed, request

__all__ = ["keyed", "mailu"]


async def _get(k: Keyed, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await request(k.client, "GET", path, headers)
    return status, orjson.loads(body)


async def test_the_admin_pool_runs_under_the_database_roles(keyed: Keyed) -> None:
    assert keyed.ctx.cfg.database.role == "engine_worker"
    assert await keyed.pool.fetchval("SELECT current_user") == "engine_worker"


async def test_a_tenant_key_reads_its_own_data_through_the_database_rules(keyed: Keyed) -> None:
    a = keyed.a
    status, page = await _get(keyed, "/v1/messages", a.auth("read"))
    assert status == 200 and sorted(m["id"] for m in page["messages"]) == sorted(a.jobs)
    status, one = await _get(keyed, f"/v1/messages/{a.jobs[0]}", a.auth("read"))
    assert status == 200 and one["id"] == a.jobs[0] and one["tenant_id"] == "ta"
    status, sup = await _get(keyed, "/v1/suppressions?tenant=ta", a.auth("read"))
    assert status == 200 and [s["address"] for s in sup["suppressions"]] == [
        "gone-ta-own@example.com"
    ]
    status, hooks = await _get(keyed, "/v1/webhooks", a.auth("read"))
    assert status == 200 and [h["id"] for h in hooks["webhooks"]] == [a.webhook]
    status, ks = await _get(keyed, "/v1/keys", a.auth("manage"))
    assert status == 200 and {x["tenant_id"] for x in ks["keys"]} == {"ta"}
    assert len(ks["keys"]) == 3


async def test_tenant_writes_go_through_the_database_rules(keyed: Keyed) -> None:
    a = keyed.a
    status, _, _ = await request(
        keyed.client,
        "POST",
        "/v1/suppressions",
        a.auth("manage"),
        json={"address": "new@example.com", "reason": "manual", "source": "operator"},
    )
    assert status == 201
    assert ("ta", "new@example.com") in await suppression_store.check(
        keyed.pool, [("ta", "new@example.com")]
    )
    status, _, _ = await request(
        keyed.client, "DELETE", "/v1/suppressions?tenant=ta&address=new@example.com",
        a.auth("manage"),
    )  # fmt: skip
    assert status == 200
    status, _, _ = await request(
        keyed.client, "DELETE", f"/v1/messages/{a.jobs[0]}", a.auth("send")
    )
    assert status == 200
    job = await message_store.get(keyed.pool, a.jobs[0])
    assert job is not None and job.state == "cancelled"
    status, _, _ = await request(
        keyed.client, "DELETE", f"/v1/webhooks/{a.webhook}", a.auth("manage")
    )
    assert status == 200
    assert await webhook_store.list_endpoints(keyed.pool, "ta") == []
    status, body, _ = await request(
        keyed.client, "POST", "/v1/webhooks", a.auth("manage"),
        json={"url": "https://hooks.example/ta/new"},
    )  # fmt: skip
    assert status == 201, body
    assert [e.url for e in await webhook_store.list_endpoints(keyed.pool, "ta")] == [
        "https://hooks.example/ta/new"
    ]
    status, body, _ = await request(
        keyed.client, "POST", "/v1/keys", a.auth("manage"), json={"scope": "read", "name": "n"}
    )
    assert status == 201, body
    new = orjson.loads(body)["api_key"]["prefix"]
    status, body, _ = await request(
        keyed.client, "POST", f"/v1/keys/{new}/rotate", a.auth("manage")
    )
    assert status == 201, body
    newer = orjson.loads(body)["api_key"]["prefix"]
    status, _, _ = await request(keyed.client, "DELETE", f"/v1/keys/{newer}", a.auth("manage"))
    assert status == 200
    actions = await keyed.pool.fetch(
        "SELECT action FROM oltp.audit_log WHERE tenant_id = 'ta' AND target = ANY($1::text[])",
        [new, newer],
    )
    assert sorted(r["action"] for r in actions) == ["key.create", "key.revoke", "key.rotate"]


def _no_app_filter(monkeypatch: pytest.MonkeyPatch, answer: str | None) -> None:
    """Every route's ``tenant_scope`` (and ``require_tenant``) answers ``answer`` whatever the
    key: an application bug."""

    def broken(request: web.Request, asked: str | None) -> str | None:
        return answer

    def broken_write(request: web.Request, given: str | None, *, what: str = "") -> str | None:
        return answer or given

    for module in (keys, messages, suppressions, webhooks):
        monkeypatch.setattr(module, "tenant_scope", broken)
        monkeypatch.setattr(module, "require_tenant", broken_write, raising=False)


async def test_the_database_limits_a_key_even_when_the_app_filter_is_gone(
    keyed: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = keyed.a, keyed.b
    _no_app_filter(monkeypatch, None)
    # The filter is gone: asking for tenant B is no longer refused (404) by the application,
    # and the operator's requests, which the database does not limit, now see every tenant...
    status, everything = await _get(keyed, "/v1/messages?tenant=ta", OPERATOR)
    assert {m["tenant_id"] for m in everything["messages"]} == {"ta", "tb"}
    # ...but tenant A's key still gets tenant A's rows only.
    for path in ("/v1/messages?tenant=tb", "/v1/messages"):
        status, page = await _get(keyed, path, a.auth("read"))
        assert status == 200 and sorted(m["id"] for m in page["messages"]) == sorted(a.jobs)
    for job_id in b.jobs:
        status, _ = await _get(keyed, f"/v1/messages/{job_id}", a.auth("read"))
        assert status == 404
    status, hooks = await _get(keyed, "/v1/webhooks", a.auth("read"))
    assert [h["id"] for h in hooks["webhooks"]] == [a.webhook]
    status, ks = await _get(keyed, "/v1/keys", a.auth("manage"))
    assert status == 200 and {x["tenant_id"] for x in ks["keys"]} == {"ta"}

    # Writes aimed at B's objects change nothing.
    status, _, _ = await request(
        keyed.client, "DELETE", f"/v1/messages/{b.jobs[0]}", a.auth("send")
    )
    assert status == 404
    job = await message_store.get(keyed.pool, b.jobs[0])
    assert job is not None and job.state == "queued"
    status, _, _ = await request(
        keyed.client, "DELETE", f"/v1/webhooks/{b.webhook}", a.auth("manage")
    )
    assert status == 404
    assert [e.id for e in await webhook_store.list_endpoints(keyed.pool, "tb")] == [b.webhook]
    gone = f"gone-tb-{MARKER}@example.com"
    status, _, _ = await request(
        keyed.client, "DELETE", f"/v1/suppressions?tenant=tb&address={gone}", a.auth("manage")
    )
    assert status == 404
    assert await suppression_store.check(keyed.pool, [("tb", gone)]) == {("tb", gone)}


async def test_a_key_pointed_at_another_tenant_by_an_app_bug_sees_nothing(
    keyed: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = keyed.a
    _no_app_filter(monkeypatch, "tb")
    status, sup = await _get(keyed, "/v1/suppressions?tenant=tb", a.auth("read"))
    assert status == 200 and sup["suppressions"] == []
    status, page = await _get(keyed, "/v1/messages", a.auth("read"))
    assert status == 200 and page["messages"] == []
    status, hooks = await _get(keyed, "/v1/webhooks", a.auth("read"))
    assert status == 200 and hooks["webhooks"] == []
    status, ks = await _get(keyed, "/v1/keys", a.auth("manage"))
    assert status == 200 and ks["keys"] == []
    # A write for tenant B under A's key is refused by the database's WITH CHECK.
    status, body, _ = await request(
        keyed.client,
        "POST",
        "/v1/suppressions",
        a.auth("manage"),
        json={"tenant_id": "tb", "address": "x@example.com", "reason": "manual"},
    )
    assert status >= 400 and MARKER.encode() not in body
    assert await suppression_store.check(keyed.pool, [("tb", "x@example.com")]) == set()
    status, body, _ = await request(
        keyed.client, "POST", "/v1/webhooks", a.auth("manage"),
        json={"tenant_id": "tb", "url": "https://hooks.example/tb/evil"},
    )  # fmt: skip
    assert status >= 400 and MARKER.encode() not in body
    assert [e.id for e in await webhook_store.list_endpoints(keyed.pool, "tb")] == [keyed.b.webhook]
    status, body, _ = await request(
        keyed.client, "POST", "/v1/keys", a.auth("manage"),
        json={"tenant_id": "tb", "scope": "manage"},
    )  # fmt: skip
    assert status >= 400 and b"pm_live_" not in body
    count = await keyed.pool.fetchval("SELECT count(*) FROM oltp.api_keys WHERE tenant_id = 'tb'")
    assert count == 3
