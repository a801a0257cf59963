"""The inbound listener (``InboundService``) on a free port against the test database.

Shared by tests/security (relay policy, limits) and tests/fuzz (garbage over SMTP).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from engine.compose import verp
from engine.config import Config
from engine.inbound.listener import InboundService
from engine.inbound.trust import InboundTrust
from tests.conftest import make_config

SECRET = "security-test-verp-secret-a41f9e07c2"
VERP_DOMAIN = "bounces.acme.example"
FBL = "fbl@acme.example"


def listener_config(dsn: str, prefix: str, **inbound: object) -> Config:
    return make_config(
        dsn,
        prefix,
        inbound={
            "listen": "127.0.0.1:0",
            "verp_domain": VERP_DOMAIN,
            "verp_secret": SECRET,
            "fbl_addresses": [FBL],
            "timeout_s": 5.0,
            **inbound,
        },
    )


def verp_address(job_id: int, secret: str = SECRET, domain: str = VERP_DOMAIN) -> str:
    return verp.encode(job_id, domain=domain, secret=secret)


@contextlib.asynccontextmanager
async def running_listener(
    cfg: Config,
    pool: asyncpg.Pool,
    *,
    worker_module: str | None = None,
    run: bool = True,
    trust: InboundTrust | None = None,
) -> AsyncIterator[InboundService]:
    """The listener on a free port; ``run=False``: nothing is parsed until the test calls
    ``service.run`` itself (its queue only fills). ``trust``: what reports prove (default: the
    listener's own, without our DKIM keys)."""
    service = InboundService(cfg.inbound, pool, trust=trust)
    if worker_module:
        service.worker_module = worker_module
    await service.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(service.run(stop) if run else stop.wait())
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
        await service.stop()


async def read_reply(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, str]:
    """One (possibly multi-line) SMTP reply: its code and text."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("connection closed before a reply")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    return int(lines[-1][:3]), "\n".join(lines)
