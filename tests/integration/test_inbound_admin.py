"""The quarantine over the admin API: list, requeue (the service functions the CLI uses)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from engine.admin.context import AdminContext
from engine.store import inbound as inbound_store
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.integration.test_admin_api import admin, call  # noqa: F401


async def test_list_and_requeue_quarantined(
    admin: tuple[TestClient[Any, Any], AdminContext],
    pool: asyncpg.Pool,
) -> None:
    client, _ = admin
    ids = []
    for i in range(3):
        ids.append(
            await inbound_store.store_raw(
                pool,
                b"Subject: %d\r\n\r\nx\r\n" % i,
                peer="192.0.2.7",
                mail_from="",
                rcpt_to=["fbl@acme.example"],
                verp_job_id=None,
                fbl=True,
            )
        )
    for inbound_id in ids[:2]:
        await inbound_store.quarantine(pool, inbound_id, "CPU budget exceeded: 260 ms", 260.0)
    listed = await call(client, "GET", "/v1/inbound/quarantined?limit=10", status=200)
    assert sorted(m["id"] for m in listed["messages"]) == ids[:2]
    assert listed["messages"][0]["reason"].startswith("CPU budget exceeded")
    body = {"ids": [ids[0], ids[2], 10**9]}
    result = await call(client, "POST", "/v1/inbound/requeue", status=200, json=body)
    assert result == {
        "requeued": [ids[0]],
        "processed": [],
        "pending": [ids[2]],
        "missing": [10**9],
    }
    assert await inbound_store.states(pool, ids) == {
        ids[0]: "pending",
        ids[1]: "quarantined",
        ids[2]: "pending",
    }
    for bad in ({"ids": []}, {"ids": [0]}, {"ids": [2**63]}, {"id": [1]}, {"ids": "1"}):
        await call(client, "POST", "/v1/inbound/requeue", status=400, json=bad)
    await call(client, "GET", "/v1/inbound/quarantined?limit=0", status=400)
    await call(client, "POST", "/v1/inbound/requeue", status=401, auth=False, json={"ids": [1]})
