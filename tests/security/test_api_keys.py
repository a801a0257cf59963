"""API keys: shown once, stored hashed, prefix-identifiable, last use recorded cheaply, audited,
revocable and rotatable from the CLI and the admin API, and rate-limited on enqueue."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine import audit
from engine.admin import build_app
from engine.keys import service, token
from engine.keys.service import Authenticator
from engine.store import tenants
from engine.tenancy import domains
from tests.fakes.fixtures import mailu
from tests.fakes.mailu import FakeMailU
from tests.integration.test_admin_api import close_context, make_context
from tests.security.keyed_admin import OPERATOR, Keyed, job, keyed, keyed_config, request

__all__ = ["keyed", "mailu"]

KEY_SHAPE = re.compile(r"^pm_live_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def _engine(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_key_format_and_digest() -> None:
    new = token.generate()
    assert KEY_SHAPE.match(new.key) and token.prefix_of(new.key) == new.prefix
    assert new.digest == token.digest(new.key) and len(new.digest) == 32
    assert new.key.encode() not in new.digest and new.key[21:].encode() not in new.digest
    assert token.matches(new.key, new.digest)
    assert not token.matches(new.key[:-1] + ("A" if new.key[-1] != "A" else "B"), new.digest)
    assert token.parse_prefix(f"pm_live_{new.prefix}") == new.prefix
    for bad in ("", "pm_live_", "pm_live_XYZ", "0123456789abc", "'; DROP TABLE x; --"):
        assert token.parse_prefix(bad) is None and token.prefix_of(bad) is None


async def test_cli_creates_lists_rotates_and_revokes(
    clean_db: str, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(f'[database]\ndsn = "{clean_db}"\n')
    await tenants.add(pool, "acme")
    done = _engine(config, "keys", "create", "--tenant", "acme", "--scope", "send", "--name", "ci")
    assert done.returncode == 0, done.stderr
    key = done.stdout.splitlines()[0]
    assert KEY_SHAPE.match(key) and done.stdout == key + "\n", "the key alone, on the first line"
    prefix = token.prefix_of(key)
    assert prefix is not None and "shown once" in done.stderr
    # stored hashed: the key (or its secret part) is nowhere in the row
    row = await pool.fetchrow("SELECT t::text AS text, hash FROM oltp.api_keys t")
    assert key not in row["text"] and key.split("_")[-1] not in row["text"]
    assert bytes(row["hash"]) == token.digest(key)
    listed = _engine(config, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = msgspec.json.decode(listed.stdout)["keys"]
    assert [(k["prefix"], k["tenant_id"], k["scope"], k["name"]) for k in keys] == [
        (prefix, "acme", "send", "ci")
    ]
    assert key.split("_")[-1] not in listed.stdout
    rotated = _engine(config, "keys", "rotate", prefix)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.splitlines()[0]
    assert KEY_SHAPE.match(new_key) and new_key != key
    revoked = _engine(config, "keys", "revoke", f"pm_live_{token.prefix_of(new_key)}")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert _engine(config, "keys", "list", "--tenant", "acme").stdout == ""
    everything = _engine(config, "keys", "list", "--revoked").stdout
    assert prefix in everything and "revoked" in everything
    # usage errors: exit 2, one line on stderr
    for args in (
        ("keys", "create", "--tenant", "nobody", "--scope", "send"),
        ("keys", "revoke", "not-a-prefix"),
        ("keys", "revoke", "0123456789ab"),
    ):
        bad = _engine(config, *args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, (args, bad.stderr)
    actions = [e.action for e in await audit.entries(pool, tenant_id="acme")]
    assert sorted(actions) == ["key.create", "key.revoke", "key.rotate"]
    assert all(e.actor.startswith("cli:") for e in await audit.entries(pool, tenant_id="acme"))


async def test_api_manages_keys_of_its_own_tenant(keyed: Keyed) -> None:
    k, a = keyed, keyed.a
    status, raw, _ = await request(
        k.client, "POST", "/v1/keys", a.auth("manage"), json={"scope": "read", "name": "dash"}
    )
    assert status == 201, raw
    created = msgspec.json.decode(raw)
    new_key, prefix = created["key"], created["api_key"]["prefix"]
    assert KEY_SHAPE.match(new_key) and created["api_key"]["tenant_id"] == "ta"
    status, raw, _ = await request(k.client, "GET", "/v1/keys", a.auth("manage"))
    listed = msgspec.json.decode(raw)["keys"]
    assert status == 200 and {x["tenant_id"] for x in listed} == {"ta"} and len(listed) == 4
    assert new_key.encode() not in raw and b"hash" not in raw
    # the new key works, with its own scope only
    read = {"Authorization": f"Bearer {new_key}"}
    assert (await request(k.client, "GET", "/v1/messages", read))[0] == 200
    assert (await request(k.client, "POST", "/v1/messages", read, json=[job("ta", 5)]))[0] == 403
    # rotate: the old key stops at once, the new one works
    status, raw, _ = await request(k.client, "POST", f"/v1/keys/{prefix}/rotate", a.auth("manage"))
    assert status == 201, raw
    rotated = msgspec.json.decode(raw)["key"]
    status, raw, _ = await request(k.client, "GET", "/v1/messages", read)
    assert status == 401 and b"revoked" in raw
    rotated_auth = {"Authorization": f"Bearer {rotated}"}
    assert (await request(k.client, "GET", "/v1/messages", rotated_auth))[0] == 200
    # revoke: 401 from then on; the audit log names the key that did it
    status, _, _ = await request(
        k.client, "DELETE", f"/v1/keys/{token.prefix_of(rotated)}", a.auth("manage")
    )
    assert status == 200
    assert (await request(k.client, "GET", "/v1/messages", rotated_auth))[0] == 401
    entries = await audit.entries(k.pool, tenant_id="ta")
    by_key = {e.action for e in entries if e.actor == f"key:{a.prefixes['manage']}"}
    assert {"key.create", "key.rotate", "key.revoke"} <= by_key
    # the operator needs tenant_id; a made-up or malformed key is 401, never a 500
    status, raw, _ = await request(k.client, "POST", "/v1/keys", OPERATOR, json={"scope": "send"})
    assert status == 400 and b"tenant_id is required" in raw
    fake = token.generate().key
    for bad in (fake, fake[:-3], "pm_live_", "pm_live_" + "a" * 5000):
        status, raw, _ = await request(
            k.client, "GET", "/v1/messages", {"Authorization": f"Bearer {bad}"}
        )
        assert status == 401, (bad[:30], raw)
        assert bad.encode() not in raw


async def test_last_use_is_recorded_at_most_once_a_minute(keyed: Keyed) -> None:
    k, a = keyed, keyed.a
    prefix = a.prefixes["read"]
    for _ in range(20):
        assert (await request(k.client, "GET", "/v1/webhooks", a.auth("read")))[0] == 200
    await asyncio.sleep(0.2)
    first = await k.pool.fetchval(
        "SELECT last_used_at FROM oltp.api_keys WHERE prefix = $1", prefix
    )
    assert first is not None
    await asyncio.sleep(0.05)
    for _ in range(5):
        assert (await request(k.client, "GET", "/v1/webhooks", a.auth("read")))[0] == 200
    await asyncio.sleep(0.2)
    again = await k.pool.fetchval(
        "SELECT last_used_at FROM oltp.api_keys WHERE prefix = $1", prefix
    )
    assert again == first, "one write per key per minute, not one per request"
    # a fresh authenticator (another instance, or a minute later) records the use again
    auth = Authenticator(k.pool, touch_every_s=0.0)
    assert await auth.authenticate(a.keys["read"]) is not None
    await auth.close()
    later = await k.pool.fetchval(
        "SELECT last_used_at FROM oltp.api_keys WHERE prefix = $1", prefix
    )
    assert later > first


@pytest.fixture
async def limited(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> AsyncIterator[tuple[TestClient[Any, Any], str]]:
    cfg = keyed_config(
        clean_db, redis_prefix, mailu, key_enqueue_rate_per_s=0.5, key_enqueue_burst=3
    )
    ctx, relay = await make_context(cfg, pool)
    await tenants.add(pool, "ta")
    await domains.add(pool, "ta", "ta.example", verified=True)
    key, _ = await service.create(pool, "ta", "send", actor="test")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        yield client, key
    finally:
        await client.close()
        await close_context(ctx, relay)


async def test_enqueue_is_rate_limited_per_key(
    limited: tuple[TestClient[Any, Any], str], redis_prefix: str, redis_client: Any
) -> None:
    client, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    status, raw, _ = await request(
        client, "POST", "/v1/messages", auth, json=[job("ta", i) for i in range(3)]
    )
    assert status == 200, raw
    status, raw, headers = await request(client, "POST", "/v1/messages", auth, json=[job("ta", 9)])
    assert status == 429 and b"retry after" in raw, raw
    assert int(headers["Retry-After"]) >= 1
    # nothing of the refused batch went in; the operator token is not limited
    status, raw, _ = await request(
        client, "POST", "/v1/messages", OPERATOR, json=[job("ta", i) for i in range(10, 20)]
    )
    assert status == 200
    # the bucket lives in Redis (shared by every instance), under the configured key prefix
    assert await redis_client.exists(f"{redis_prefix}:ratelimit:tat:{token.prefix_of(key)}")
