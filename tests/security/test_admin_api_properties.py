"""The admin API under schemathesis: generated requests for every operation in /openapi.json.

With the operator token or a tenant's API key: no 5xx, whatever the input (``/readyz`` answers
503 by design when a backing service is down; here everything is up, so it must not). Without
the token, or with a wrong one: 401 on every operation the document marks as needing it
(``security: [bearer]``); the others (/healthz, the RFC 8058 one-click unsubscribe) must be in
``PUBLIC``. An operator-only route (``x-access: operator``) answers a tenant key with 403.
Neither the token nor the key appears in any log record written meanwhile. The server is the
real aiohttp app on 127.0.0.1:0 in a thread of its own (schemathesis calls it with
``requests``, synchronously). ``ENGINE_SCHEMA_EXAMPLES`` raises the examples per operation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.admin import AdminContext, AdminServer
from engine.keys import service as keys
from engine.queue import streams as streams_mod
from engine.relay.pool import RelayPool
from engine.store import tenants
from engine.store.pool import connect
from tests.conftest import make_config
from tests.fakes.mailu import FakeMailU

TOKEN = "schemathesis-admin-token-0123456789abcdef"
#: Operations that may answer without a token; any other unauthenticated operation is a finding.
PUBLIC = {"/healthz", "/v1/unsubscribe/{token}"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + repr(record.__dict__))


class _ServerThread:
    """The admin app with its PostgreSQL/Redis/relay context, on its own event loop."""

    def __init__(self, dsn: str, prefix: str, node: FakeMailU) -> None:
        self.cfg = make_config(
            dsn,
            prefix,
            relay={
                "nodes": [{"name": "n1", "host": "127.0.0.1", "port": node.port, "tls": "none"}]
            },
            admin={"token": TOKEN, "listen": "127.0.0.1:0"},
            queue={"max_message_bytes": 100_000},
        )
        self.url = ""
        self.tenant_key = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        pool = await connect(self.cfg.database)
        await tenants.add(pool, "acme")
        await tenants.add(pool, "other")
        self.tenant_key, _ = await keys.create(pool, "other", "manage", actor="test")
        relay = RelayPool(self.cfg.relay)
        await relay.start(health_checks=False)
        streams = streams_mod.Streams(streams_mod.connect(self.cfg.redis), self.cfg.redis.prefix)
        await streams.ensure_groups()
        ctx = AdminContext(
            cfg=self.cfg, pool=pool, streams=streams, relay=relay, drain=lambda: None
        )
        server = AdminServer(ctx)
        host, port = await server.start()
        self.url = f"http://{host}:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()
            await relay.close()
            await streams.client.aclose()
            await pool.close()

    def __enter__(self) -> _ServerThread:
        self._thread.start()
        assert self._ready.wait(30), "admin server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture
def admin_url(clean_db: str, redis_prefix: str) -> Iterator[tuple[str, str]]:
    with FakeMailU() as node, _ServerThread(clean_db, redis_prefix, node) as server:
        yield server.url, server.tenant_key


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=_auth(TOKEN))
    return [result.ok() for result in schema.get_all_operations()]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_generated_requests_never_get_a_5xx_and_need_the_token(
    admin_url: tuple[str, str],
) -> None:
    url, tenant_key = admin_url
    records = _Records()
    logging.getLogger().addHandler(records)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        operations = _operations(url)
        assert len(operations) >= 10, [f"{o.method} {o.path}" for o in operations]
        failures: list[str] = []
        for op in operations:
            _exercise(op, url, tenant_key, failures)
        assert not failures, "\n".join(failures[:20])
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(old_level)
    secrets = (TOKEN, TOKEN[:20], tenant_key, tenant_key[21:])
    leaked = [line for line in records.lines if any(s in line for s in secrets)]
    assert not leaked, f"the admin token or an API key reached a log record: {leaked[:3]}"


def _exercise(op: Any, url: str, tenant_key: str, failures: list[str]) -> None:
    needs_token = op.definition.raw.get("security") != []
    access = op.definition.raw.get("x-access")
    if not needs_token and op.path not in PUBLIC:
        failures.append(f"{op.method.upper()} {op.path} is documented as open to anyone")

    @settings(
        max_examples=int(os.environ.get("ENGINE_SCHEMA_EXAMPLES", "40")),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(), auth=st.sampled_from(["good", "key", "none", "wrong"]))
    def run(case: Any, auth: str) -> None:
        headers = {
            "good": _auth(TOKEN),
            "key": _auth(tenant_key),  # tenant "other"'s manage key
            "none": {},
            "wrong": _auth("x" * 40),
        }[auth]
        case.headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        response = case.call(base_url=url, headers=headers, timeout=10)
        where = f"{case.method} {case.formatted_path} ({auth} token) -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:300]}")
        if auth in ("none", "wrong") and needs_token and response.status_code != 401:
            failures.append(f"{where}: expected 401")
        if auth == "key" and access == "operator" and response.status_code != 403:
            failures.append(f"{where}: an operator-only route must refuse a tenant key")

    run()
