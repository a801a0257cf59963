"""Webhook delivery against a real receiver (aiohttp on 127.0.0.1:0).

Batches arrive signed and verifiable; each endpoint gets only its tenant's events and the kinds
it asked for; a receiver that is down for a while gets everything once it is back (retries,
nothing twice); a batch failing past the maximum age goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from engine.config import Config
from engine.enqueue import enqueue
from engine.events import Event, write
from engine.events import webhooks as endpoints
from engine.events.delivery import WebhookWorker
from engine.events.signature import HEADER, verify
from engine.events.ssrf import policy_of
from engine.store import tenants
from engine.tenancy import domains as sending_domains
from tests.conftest import make_config


class Receiver:
    """A webhook receiver that can fail on purpose or go away entirely."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # (name, headers, body)
        self.status = 200
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.match_info["name"], dict(request.headers), body))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "nope")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def events_for(self, name: str, secret: str | None = None) -> list[dict[str, Any]]:
        """Every event POSTed to ``/hook/name`` (checking signatures when a secret is given)."""
        out: list[dict[str, Any]] = []
        for path, headers, body in self.requests:
            if path != name:
                continue
            doc = orjson.loads(body)
            if secret is not None:
                assert Webhook(secret).verify(body, headers) == doc  # Standard Webhooks
                assert verify(secret, body, headers[HEADER]), headers[HEADER]  # deprecated one
            out.extend(doc["events"])
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def fast_config(dsn: str, prefix: str, port: int, **events: object) -> Config:
    """Fast timings; the loopback receiver allow-listed (address and port) as an operator would."""
    values: dict[str, object] = {
        "webhook_allow_cidrs": ["127.0.0.0/8"],
        "webhook_ports": [port],
        "webhook_flush_ms": 20,
        "webhook_batch": 3,
        "webhook_timeout_s": 2,
        "webhook_retry_base_s": 0.05,
        "webhook_retry_max_s": 0.2,
        **events,
    }
    return make_config(dsn, prefix, events=values)


def ev(i: int, kind: str = "relayed", tenant: str = "acme") -> Event:
    return Event(
        tenant_id=tenant,
        kind=kind,
        job_id=i,
        recipient=f"user{i}@example.com",
        at=dt.datetime.now(dt.UTC),
    )


async def write_committed(pool: asyncpg.Pool, events: list[Event]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await write(conn, events)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def no_dns(name: str, rdtype: str) -> list[str]:
    """The DNS seam for literal-address URLs: nothing resolves."""
    return []


class Running:
    """A WebhookWorker running in the background until ``stop()``."""

    def __init__(self, pool: asyncpg.Pool, cfg: Config) -> None:
        self.worker = WebhookWorker(
            pool, cfg.events, cfg.database.dsn, resolve=no_dns, refresh_s=0.1
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.worker.run(self._stop))

    async def started(self) -> Running:
        await asyncio.wait_for(self.worker.leading.wait(), 5)
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 10)


@pytest.fixture
async def two_tenants(pool: asyncpg.Pool) -> None:
    await tenants.add(pool, "acme")
    await tenants.add(pool, "globex")


async def test_signed_batches_filtered_by_tenant_and_kind(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    allow = policy_of(cfg.events)
    _, all_secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("all"), policy=allow
    )
    _, bounce_secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("bounces"), policy=allow, kinds=["bounced"]
    )
    _, other_secret = await endpoints.create(
        pool, tenant_id="globex", url=receiver.url("globex"), policy=allow
    )
    running = await Running(pool, cfg).started()
    try:
        kinds = ["relayed", "bounced", "deferred", "complained", "bounced", "relayed", "failed"]
        await write_committed(pool, [ev(i, k) for i, k in enumerate(kinds)])
        await write_committed(pool, [ev(100, "relayed", tenant="globex")])
        expected = kinds.count("bounced") + len(kinds) + 1
        names = ("all", "bounces", "globex")
        await eventually(lambda: sum(len(receiver.events_for(n)) for n in names) >= expected)
        await asyncio.sleep(0.1)  # nothing more trickles in
    finally:
        await running.stop()
    secrets = {"all": all_secret, "bounces": bounce_secret, "globex": other_secret}
    ids = {e.url.rsplit("/", 1)[1]: e.id for e in await endpoints.list_endpoints(pool)}
    got = {name: receiver.events_for(name, secrets[name]) for name in secrets}  # signatures ok
    for name, headers, body in receiver.requests:
        doc = orjson.loads(body)
        assert doc["endpoint_id"] == ids[name]
        first_id, last_id = doc["events"][0]["id"], doc["events"][-1]["id"]
        assert headers["webhook-id"] == f"msg_{ids[name]}_{first_id}_{last_id}"
        assert not verify("whsec_wrong-secret-0123456789", body, headers[HEADER])
        assert not verify(secrets[name], body + b" ", headers[HEADER])
        assert 1 <= len(doc["events"]) <= 3  # webhook_batch
    assert [e["kind"] for e in got["all"]] == kinds
    assert [e["job_id"] for e in got["bounces"]] == [1, 4]
    assert [(e["tenant_id"], e["job_id"]) for e in got["globex"]] == [("globex", 100)]
    first = got["all"][0]
    assert first["recipient"] == "user0@example.com" and isinstance(first["id"], int)
    assert first["at"].endswith(("Z", "+00:00"))
    states = {e.url.rsplit("/", 1)[1]: e for e in await endpoints.list_endpoints(pool)}
    assert states["all"].delivered == len(kinds) and states["all"].last_status == 200
    assert states["bounces"].delivered == 2


async def test_events_carry_the_jobs_campaign_key_and_metadata(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    """A consumer correlates an event with what it enqueued without a lookup of its own."""
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    await sending_domains.add(pool, "acme", "acme.example", verified=True)
    _, secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("all"), policy=policy_of(cfg.events)
    )
    job = {
        "tenant_id": "acme",
        "idempotency_key": "signup-42",
        "from": "news@acme.example",
        "to": "user42@example.com",
        "subject": "Hi",
        "text": "Hello",
        "campaign_id": "spring",
        "metadata": {"user_id": 42, "plan": "pro"},
    }
    plain = {**job, "idempotency_key": "plain-1", "campaign_id": None, "metadata": None}
    docs = [orjson.dumps(job), orjson.dumps({k: v for k, v in plain.items() if v is not None})]
    results = await enqueue(pool, docs, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.job_id is not None for r in results), results
    running = await Running(pool, cfg).started()
    try:
        await eventually(lambda: len(receiver.events_for("all")) >= 2)
    finally:
        await running.stop()
    got = {e["job_id"]: e for e in receiver.events_for("all", secret)}
    tagged, untagged = got[results[0].job_id], got[results[1].job_id]
    assert tagged["kind"] == "queued" and tagged["recipient"] == "user42@example.com"
    assert tagged["campaign_id"] == "spring"
    assert tagged["idempotency_key"] == "signup-42"
    assert tagged["metadata"] == {"user_id": 42, "plan": "pro"}
    assert untagged["idempotency_key"] == "plain-1"
    assert untagged["campaign_id"] is None and untagged["metadata"] is None


async def test_receiver_down_for_a_while_then_everything_arrives_once(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    ep, secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("a"), policy=policy_of(cfg.events)
    )
    await receiver.stop()  # down before anything is sent
    running = await Running(pool, cfg).started()
    try:
        await write_committed(pool, [ev(i) for i in range(5)])

        async def retried() -> bool:
            state = (await endpoints.list_endpoints(pool, "acme"))[0]
            return state.attempts >= 3 and state.failing_since is not None

        await eventually(retried)
        state = (await endpoints.list_endpoints(pool, "acme"))[0]
        assert state.last_error == "connection failed" and state.delivered == 0
        # the engine restarts while the receiver is still down: the cursor is in PostgreSQL
        await running.stop()
        running = await Running(pool, cfg).started()
        await write_committed(pool, [ev(i) for i in range(5, 8)])
        await receiver.start()  # back on the same port
        await eventually(lambda: len(receiver.events_for("a", secret)) >= 8)
        await asyncio.sleep(0.2)  # nothing more trickles in
    finally:
        await running.stop()
    jobs = [e["job_id"] for e in receiver.events_for("a", secret)]
    assert jobs == list(range(8))  # in order, each once
    first = orjson.loads(receiver.requests[0][2])
    assert first["attempt"] > 1 and first["endpoint_id"] == ep.id
    state = (await endpoints.list_endpoints(pool, "acme"))[0]
    assert state.attempts == 0 and state.failing_since is None and state.delivered == 8


async def test_a_retried_batch_keeps_its_webhook_id(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    """Standard Webhooks receivers deduplicate on webhook-id: a retry must reuse it."""
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    _, secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("a"), policy=policy_of(cfg.events)
    )
    receiver.status = 500
    running = await Running(pool, cfg).started()
    try:
        await write_committed(pool, [ev(1), ev(2)])
        await eventually(lambda: len(receiver.requests) >= 3)
        receiver.status = 200

        async def delivered() -> bool:
            return (await endpoints.list_endpoints(pool, "acme"))[0].delivered == 2

        await eventually(delivered)
    finally:
        await running.stop()
    ids = {headers["webhook-id"] for _, headers, _ in receiver.requests}
    assert len(ids) == 1, ids
    attempts = [orjson.loads(body)["attempt"] for _, _, body in receiver.requests]
    assert attempts == list(range(1, len(attempts) + 1))
    for _, headers, body in receiver.requests:  # each attempt signed afresh, all verifiable
        assert [e["job_id"] for e in Webhook(secret).verify(body, headers)["events"]] == [1, 2]


async def test_dead_letter_after_max_age_then_delivery_goes_on(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    cfg = fast_config(
        clean_db, redis_prefix, receiver.port, webhook_max_age_s=0.3, webhook_batch=10
    )
    ep, secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("a"), policy=policy_of(cfg.events)
    )
    receiver.status = 500
    running = await Running(pool, cfg).started()
    try:
        await write_committed(pool, [ev(1), ev(2)])
        await eventually(lambda: endpoints.dead_letters(pool, ep.id))
        receiver.status = 200
        await write_committed(pool, [ev(3)])
        await eventually(lambda: any(e["job_id"] == 3 for e in receiver.events_for("a", secret)))
    finally:
        await running.stop()
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM oltp.events ORDER BY id")]
    assert await endpoints.dead_letters(pool, ep.id) == [ids[:2]]
    last = orjson.loads(receiver.requests[-1][2])
    assert [e["job_id"] for e in last["events"]] == [3]
    state = (await endpoints.list_endpoints(pool, "acme"))[0]
    assert state.dead_letters == 1 and state.delivered == 1 and state.attempts == 0
    row = await pool.fetchrow("SELECT last_status, attempts FROM oltp.webhook_dead_letters")
    assert row is not None and row["last_status"] == 500 and row["attempts"] >= 1


async def test_one_instance_delivers_at_a_time(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    _, secret = await endpoints.create(
        pool, tenant_id="acme", url=receiver.url("a"), policy=policy_of(cfg.events)
    )
    first = await Running(pool, cfg).started()
    second = Running(pool, cfg)
    try:
        await write_committed(pool, [ev(i) for i in range(6)])
        await eventually(lambda: len(receiver.events_for("a", secret)) >= 6)
        assert not second.worker.leading.is_set()
        await first.stop()  # the standby takes over
        await asyncio.wait_for(second.worker.leading.wait(), 10)
        await write_committed(pool, [ev(6)])
        await eventually(lambda: len(receiver.events_for("a", secret)) >= 7)
    finally:
        await first.stop()
        await second.stop()
    assert [e["job_id"] for e in receiver.events_for("a", secret)] == list(range(7))


async def test_an_endpoint_added_while_the_worker_leads_gets_what_follows(
    clean_db: str, redis_prefix: str, pool: asyncpg.Pool, receiver: Receiver, two_tenants: None
) -> None:
    """With no endpoint the worker scans nothing; one added later is served from its cursor,
    and events after its first batch still reach it (the scan starts again)."""
    cfg = fast_config(clean_db, redis_prefix, receiver.port)
    running = await Running(pool, cfg).started()
    try:
        await write_committed(pool, [ev(1, tenant="globex")])
        await asyncio.sleep(0.3)  # a few rounds with no endpoint
        _, secret = await endpoints.create(
            pool, tenant_id="acme", url=receiver.url("late"), policy=policy_of(cfg.events)
        )
        await write_committed(pool, [ev(2)])
        await eventually(lambda: len(receiver.events_for("late")) >= 1)
        await asyncio.sleep(0.3)  # its first batch is done: only the scan brings more
        await write_committed(pool, [ev(3), ev(4, tenant="globex")])
        await eventually(lambda: len(receiver.events_for("late")) >= 2)
        await asyncio.sleep(0.1)
    finally:
        await running.stop()
    assert [e["job_id"] for e in receiver.events_for("late", secret)] == [2, 3]
