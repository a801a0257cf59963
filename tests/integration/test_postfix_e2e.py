"""End to end through a real Postfix relay node: the engine hears what the providers answered.

engine daemon → Postfix (submission, STARTTLS + AUTH, like MailU) → provider fakes; Postfix's
DSNs (asked for by the engine's ENVID/NOTIFY) → the engine's inbound listener (the VERP domain
is routed to it) → events, suppressions and shaping. Here a job's life is more than
``relayed``: ``delivered`` (sampled success notice), ``delayed`` (the provider answers 4xx and
Postfix retries), ``bounced`` (the provider's 5xx), across an engine restart too; and a
provider's 421s at the node lower the engine's rate for that provider only.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import orjson
import pytest
import redis.asyncio as aioredis

from engine.config import Config
from engine.daemon import Daemon
from engine.enqueue import enqueue
from engine.shaping.shaper import Shaper
from engine.store import tenants
from tests.conftest import REDIS_URL, make_config
from tests.fakes.postfix import PostfixNode, Provider

pytestmark = pytest.mark.timeout(120)
log = logging.getLogger("tests.postfix_e2e")

SENDER = "news@acme.example"
CEILING = 40.0  # per sender x provider, msg/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_config(
    dsn: str, prefix: str, pf: PostfixNode, inbound_port: int, **relay: Any
) -> Config:
    node = msgspec.structs.asdict(pf.relay_node("pf", max_connections=4))
    return make_config(
        dsn,
        prefix,
        relay={
            "nodes": [node],
            "connect_timeout_s": 3.0,
            "command_timeout_s": 10.0,
            "dsn_success_fraction": 1.0,
            **relay,
        },
        inbound={"listen": f"127.0.0.1:{inbound_port}", "parse_workers": 1},
        queue={
            "retry_base_s": 0.2,
            "retry_max_s": 1.0,
            "feeder_interval_s": 0.1,
            "reconcile_interval_s": 1.0,
            "lease_s": 5.0,
        },
        shaping={
            "enabled": True,
            "warmup": False,
            "aimd_cooldown_s": 0.0,
            "default_rate_per_s": CEILING,
            "providers": [
                {"name": "gmail", "mx_suffixes": ["gmail.test"], "rate_per_s": CEILING},
                {"name": "outlook", "mx_suffixes": ["outlook.test"], "rate_per_s": CEILING},
                {"name": "yahoo", "mx_suffixes": ["yahoo.test"], "rate_per_s": CEILING},
            ],
        },
        dns={
            "overrides": {
                "gmail.test": ["mx.gmail.test"],
                "outlook.test": ["mx.outlook.test"],
                "yahoo.test": ["mx.yahoo.test"],
            }
        },
        dkim={"enabled": False},
    )


class Engine:
    """The real daemon in this process, started and stopped at will (same config, same ports)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        self.daemon = Daemon(self.cfg, None)
        self.task = asyncio.create_task(self.daemon.run())
        host, _, port = self.cfg.inbound.listen.rpartition(":")
        deadline = time.monotonic() + 30
        while True:  # ready when the inbound listener answers
            if self.task.done():
                self.task.result()
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.daemon is None or self.task is None:
            return
        self.daemon._on_stop(signal.SIGTERM)
        assert await asyncio.wait_for(self.task, 20) == 0
        self.daemon = self.task = None


@pytest.fixture
async def engine(
    clean_db: str, redis_prefix: str, postfix_node: PostfixNode, pool: asyncpg.Pool
) -> AsyncIterator[Engine]:
    port = free_port()
    postfix_node.route("bounces.localhost", port)  # the VERP domain's MX: our listener
    await tenants.add(pool, "acme")
    eng = Engine(engine_config(clean_db, redis_prefix, postfix_node, port))
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


async def enqueue_to(pool: asyncpg.Pool, recipients: list[str]) -> dict[str, int]:
    items = [
        orjson.dumps(
            {
                "tenant_id": "acme",
                "idempotency_key": f"k-{rcpt}",
                "from": SENDER,
                "to": rcpt,
                "subject": "Hello",
                "text": "Hi there",
            }
        )
        for rcpt in recipients
    ]
    res = await enqueue(pool, items, max_message_bytes=10**6, max_age_s=3600)
    assert all(r.error is None for r in res), res
    return {rcpt: r.job_id for rcpt, r in zip(recipients, res, strict=True) if r.job_id}


async def events(pool: asyncpg.Pool, job_id: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT kind, reason, reply, data FROM oltp.events WHERE job_id = $1 ORDER BY id", job_id
    )


def as_dict(value: Any) -> dict[str, Any]:
    """An event's ``data`` (jsonb), whichever way the pool decodes it."""
    out = orjson.loads(value) if isinstance(value, str | bytes) else value
    assert isinstance(out, dict)
    return out


async def kinds(pool: asyncpg.Pool, job_id: int) -> list[str]:
    return [e["kind"] for e in await events(pool, job_id)]


async def until(
    check: Callable[[], Awaitable[bool]], what: str, pf: PostfixNode, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; postfix log tail:\n{pf.log()[-3000:]}")


async def test_a_jobs_life_through_postfix(
    pool: asyncpg.Pool,
    postfix_node: PostfixNode,
    providers: dict[str, Provider],
    engine: Engine,
) -> None:
    pf = postfix_node
    gmail, yahoo = providers["gmail.test"], providers["yahoo.test"]
    gmail.set_reply("RCPT", 421, "4.7.0 Try again later, closing connection")
    yahoo.fail_rcpt("^gone@", 550, "5.1.1 The email account that you tried to reach does not exist")
    jobs = await enqueue_to(pool, ["ok@outlook.test", "slow@gmail.test", "gone@yahoo.test"])
    ok, slow, gone = jobs["ok@outlook.test"], jobs["slow@gmail.test"], jobs["gone@yahoo.test"]

    # relayed -> delivered: the sampled success notice ("relayed": the provider has no DSN).
    async def delivered(job: int) -> bool:
        return "delivered" in await kinds(pool, job)

    await until(lambda: delivered(ok), "the delivered event", pf)
    assert await kinds(pool, ok) == ["queued", "relayed", "delivered"]
    event = (await events(pool, ok))[-1]
    data = as_dict(event["data"])
    assert "250 2.0.0 Ok: queued as" in event["reply"] and event["reason"] == "2.0.0"
    assert data["provider"] == "outlook" and data["node"] == "pf" and data["sender"] == SENDER
    assert data["dsn_action"] == "relayed" and data["remote_mta"] == "127.0.0.1"
    assert 0 <= data["enqueue_to_delivered_s"] < 30

    # relayed -> bounced: the provider's 550 comes back as Postfix's failure notice.
    async def bounced() -> bool:
        return await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", gone) == "bounced"

    await until(bounced, "the bounce", pf)
    assert await kinds(pool, gone) == ["queued", "relayed", "bounced"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM oltp.suppressions WHERE address = 'gone@yahoo.test'"
        )
        == 1
    )
    bounce = (await events(pool, gone))[-1]
    assert "550" in bounce["reply"] and "5.1.1" in bounce["reply"]
    assert as_dict(bounce["data"])["provider"] == "yahoo"

    # relayed -> delayed: the provider's 421 at Postfix, reported by its delay warning.
    async def delayed() -> bool:
        return "delayed" in await kinds(pool, slow)

    await until(delayed, "the delay notice", pf)
    delay = next(e for e in await events(pool, slow) if e["kind"] == "delayed")
    assert delay["reply"] == "421 4.7.0 Try again later, closing connection"
    assert as_dict(delay["data"])["provider"] == "gmail"
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", slow) == "relayed"

    # The engine restarts while Postfix still holds the mail; the later notice maps to the job.
    await engine.stop()
    gmail.reset_faults()
    pf.flush()
    await until(lambda: asyncio.sleep(0, result=gmail.count() == 1), "gmail's delivery", pf)
    await engine.start()
    await until(lambda: delivered(slow), "the delivered event after a restart", pf)
    assert await kinds(pool, slow) == ["queued", "relayed", "delayed", "delivered"]
    assert await pool.fetchval("SELECT state FROM queue.jobs WHERE id = $1", slow) == "relayed"
    assert pf.queue_size() == 0
    # Nothing counted the delay as a bounce.
    soft = await pool.fetchval("SELECT count(*) FROM oltp.events WHERE kind = 'soft_bounced'")
    assert soft == 0


async def test_providers_421_at_the_node_lowers_that_providers_rate(
    pool: asyncpg.Pool,
    redis_prefix: str,
    postfix_node: PostfixNode,
    providers: dict[str, Provider],
    engine: Engine,
) -> None:
    pf, gmail = postfix_node, providers["gmail.test"]
    gmail.set_reply("RCPT", 421, "4.7.0 Try again later, closing connection")
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        shaper = Shaper(engine.cfg, client)
        before = {p: await shaper.rate("acme", SENDER, p) for p in ("gmail", "outlook")}
        assert before == {"gmail": CEILING, "outlook": CEILING}
        await enqueue_to(pool, [f"u{i}@gmail.test" for i in range(5)] + ["a@outlook.test"])

        async def dropped() -> bool:
            return await shaper.rate("acme", SENDER, "gmail") < CEILING

        await until(dropped, "gmail's rate to drop", pf)
        took = time.time() - (gmail.first_fault_at or 0.0)
        log.info("provider's first 421 to the engine's rate drop: %.2f s", took)
        assert took < 20  # delay_warning_time 2 s + Postfix's retry schedule + the listener
        assert await shaper.rate("acme", SENDER, "gmail") <= CEILING / 2
        # outlook.test answered 250 all along: its rate did not move.
        assert await shaper.rate("acme", SENDER, "outlook") == CEILING
    finally:
        await client.aclose()
