"""``max_connections`` per provider holds in the send path: a slow relay never sees more of one
provider's messages at once than the limit, while the node's own pool would allow more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg

from engine.shaping.model import DeliverySignal, Provider, ShapeDecision, ShapeRequest
from engine.store import tenants
from engine.tenancy import domains
from tests.fakes.fixtures import mailu  # noqa: F401
from tests.fakes.mailu import FakeMailU
from tests.integration.test_admin_api import job
from tests.integration.test_admin_flow import pipeline, pipeline_config, post

GMAIL_CONNECTIONS = 2


class OneProvider:
    """The dispatcher's shaping seam: everything may go, every recipient is "gmail"."""

    async def acquire(self, requests: Sequence[ShapeRequest]) -> list[ShapeDecision]:
        return [ShapeDecision(allowed=True, provider="gmail") for _ in requests]

    def record(self, signal: DeliverySignal | None) -> None:
        pass

    def provider_limits(self, name: str) -> Provider:
        return Provider(name, 100.0, GMAIL_CONNECTIONS, 100)


async def test_provider_in_flight_limit_bounds_relay_sessions(
    clean_db: str, redis_prefix: str, mailu: FakeMailU, pool: asyncpg.Pool
) -> None:
    await tenants.add(pool, "acme")
    await domains.add(pool, "acme", "acme.example", verified=True)
    mailu.set_delay("DATA", 0.2)  # slow transactions: without the limit the pool would open 4
    cfg = pipeline_config(clean_db, redis_prefix, mailu)
    async with pipeline(cfg, pool, OneProvider()) as p:  # type: ignore[arg-type]
        ids = await post(p.client, *(job(i) for i in range(8)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            n = await pool.fetchval(
                "SELECT count(*) FROM queue.jobs WHERE id = ANY($1) AND state = 'relayed'", ids
            )
            if n == len(ids):
                break
            await asyncio.sleep(0.05)
    received = mailu.received
    assert len(received) == 8
    # The relay node's pool allows 4 sessions; one provider's limit of 2 kept it to 2.
    assert len({m.connection for m in received}) <= GMAIL_CONNECTIONS
