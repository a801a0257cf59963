"""Python client for platform services: enqueue jobs through the batch path.

    async with EngineClient("postgresql://engine@db/engine") as client:
        results = await client.enqueue([{"tenant_id": "acme", "idempotency_key": "k1", ...}])

Each result says the job id (or the per-job error); re-enqueueing the same
(tenant_id, idempotency_key) returns the same id and sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import asyncpg
import msgspec

from engine.config import Config, DatabaseConfig
from engine.enqueue import EnqueueResult, enqueue
from engine.model import Job
from engine.store import pool as pool_mod

_ENC = msgspec.json.Encoder()


class EngineClient:
    """Enqueue jobs into the engine's PostgreSQL queue tier (the daemon is woken by NOTIFY)."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        config: Config | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        cfg = config or Config()
        self._db = DatabaseConfig(dsn=dsn) if dsn else cfg.database
        self._max_bytes = cfg.queue.max_message_bytes
        self._max_age_s = cfg.queue.max_age_s
        self._raw_trace = cfg.security.raw_trace_headers
        self._enforce_domains = cfg.security.enforce_sender_domains
        self._pool = pool
        self._owns_pool = pool is None
        self._tiers: pool_mod.Tiers | None = None  # content may live on another server

    async def connect(self) -> EngineClient:
        if self._pool is None:
            self._pool = await pool_mod.connect(self._db, min_size=1)
        if self._tiers is None:
            self._tiers = await pool_mod.connect_tiers(self._db, self._pool, min_size=1)
        return self

    async def close(self) -> None:
        if self._tiers is not None:
            await self._tiers.close()
            self._tiers = None
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> EngineClient:
        return await self.connect()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def enqueue(
        self, jobs: Iterable[Job | Mapping[str, Any] | bytes | str]
    ) -> list[EnqueueResult]:
        """Enqueue a batch (dicts, Job structs or JSON); one result per job, in order."""
        if self._pool is None or self._tiers is None:
            await self.connect()
        assert self._pool is not None and self._tiers is not None
        items: list[Job | bytes | str] = [
            _ENC.encode(j) if isinstance(j, Mapping) else j for j in jobs
        ]
        return await enqueue(
            self._pool,
            items,
            max_message_bytes=self._max_bytes,
            max_age_s=self._max_age_s,
            raw_trace=self._raw_trace,
            enforce_domains=self._enforce_domains,
            content_pool=self._tiers.content,
        )

    async def enqueue_one(self, job: Job | Mapping[str, Any]) -> EnqueueResult:
        """Enqueue a single job (e.g. a password reset with priority high)."""
        (result,) = await self.enqueue([job])
        return result
