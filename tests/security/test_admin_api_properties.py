"""The admin API under schemathesis: generated requests for every operation in /openapi.json.

With the token: no 5xx, whatever the input (``/readyz`` answers 503 by design when a backing
service is down; here everything is up, so it must not). Without the token, or with a wrong one:
401 on every operation the document marks as needing it (``security: [bearer]``); the others
(/healthz, the RFC 8058 one-click unsubscribe) must be in ``PUBLIC``. The token never appears in
any log record written meanwhile. The server is the real aiohttp app on 127.0.0.1:0 in a thread
of its own (schemathesis calls it with ``requests``, synchronously).
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
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        pool = await connect(self.cfg.database)
        await tenants.add(pool, "acme")
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
def admin_url(clean_db: str, redis_prefix: str) -> Iterator[str]:
    with FakeMailU() as node, _ServerThread(clean_db, redis_prefix, node) as server:
        yield server.url


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=_auth(TOKEN))
    return [result.ok() for result in schema.get_all_operations()]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_generated_requests_never_get_a_5xx_and_need_the_token(admin_url: str) -> None:
    records = _Records()
    logging.getLogger().addHandler(records)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        operations = _operations(admin_url)
        assert len(operations) >= 10, [f"{o.method} {o.path}" for o in operations]
        failures: list[str] = []
        for op in operations:
            _exercise(op, admin_url, failures)
        assert not failures, "\n".join(failures[:20])
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(old_level)
    leaked = [line for line in records.lines if TOKEN in line or TOKEN[:20] in line]
    assert not leaked, f"the admin token reached a log record: {leaked[:3]}"


def _exercise(op: Any, url: str, failures: list[str]) -> None:
    needs_token = op.definition.raw.get("security") != []
    if not needs_token and op.path not in PUBLIC:
        failures.append(f"{op.method.upper()} {op.path} is documented as open to anyone")

    @settings(
        max_examples=int(os.environ.get("ENGINE_SCHEMA_EXAMPLES", "25")),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(), auth=st.sampled_from(["good", "none", "wrong"]))
    def run(case: Any, auth: str) -> None:
        headers = {"good": _auth(TOKEN), "none": {}, "wrong": _auth("x" * 40)}[auth]
        case.headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        response = case.call(base_url=url, headers=headers, timeout=10)
        where = f"{case.method} {case.formatted_path} ({auth} token) -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:300]}")
        if auth != "good" and needs_token and response.status_code != 401:
            failures.append(f"{where}: expected 401")

    run()
