"""The asyncpg connection pool, with jsonb decoded by orjson and clear connection errors."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from engine.config import DatabaseConfig
from engine.errors import StoreError
from engine.redaction import redact

__all__ = [
    "Conn",
    "Reads",
    "Tiers",
    "connect",
    "connect_one",
    "connect_reads",
    "connect_tiers",
    "transaction",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _bad_dsn(dsn: str, exc: Exception) -> StoreError:
    return StoreError(
        redact(f"[database] dsn {dsn!r} cannot be used: {exc}"),
        hint="write it as a postgresql:// URL with user, password, host, port and database"
        " (key=value DSNs are not supported)",
    )


def _unreachable(dsn: str, exc: Exception) -> StoreError:
    return StoreError(
        redact(f"cannot connect to PostgreSQL at {dsn}: {exc}"),
        hint="check [database] dsn / ENGINE_DATABASE__DSN and that the server is running",
    )


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL).

    That query was one extra round trip on every release, ~100 a second under load, for session
    state this engine never leaves on a pooled connection: LISTEN and session advisory locks use
    dedicated connections (:func:`connect_one`) and settings are only ever ``SET LOCAL``. asyncpg
    still rolls back an open transaction before calling this.
    """


def _init_as(role: str | None) -> Callable[[asyncpg.Connection], Coroutine[Any, Any, None]]:
    """The pool's connection set-up: codecs, then the configured role (kept for the
    connection's life: releases never reset the session)."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init(conn)
        if role is not None:
            await conn.execute(f'SET ROLE "{role}"')  # validated in config/load.py

    return init


async def connect(
    cfg: DatabaseConfig, *, min_size: int | None = None, dsn: str | None = None
) -> asyncpg.Pool:
    """Open the pool or raise :class:`StoreError` naming the server that did not answer.

    ``dsn``: another server with the same settings (the replica); default ``cfg.dsn``. A
    multi-host DSN (``h1:5432,h2:5432`` with ``target_session_attrs=read-write``) is asyncpg's
    own: every new connection tries the hosts in order and keeps the one that is the primary,
    so after a failover the pool's next connections find the promoted server by themselves.
    """
    dsn = cfg.dsn if dsn is None else dsn
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=cfg.pool_min if min_size is None else min_size,
            max_size=cfg.pool_max,
            command_timeout=cfg.command_timeout_s,
            timeout=cfg.connect_timeout_s,
            statement_cache_size=cfg.statement_cache_size,
            init=_init_as(cfg.role),
            reset=_keep_session,
        )
    except asyncpg.ClientConfigurationError as exc:
        raise _bad_dsn(dsn, exc) from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise _unreachable(dsn, exc) from None
    return pool


#: What says "this server is not there" (as opposed to "this query is wrong").
_GONE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # includes a connection that closed under the query
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TargetServerAttributeNotMatched,  # a multi-host DSN with no server of the kind
    # On a hot standby, "canceling statement due to conflict with recovery": the replica is
    # replaying something this query is in the way of.
    asyncpg.SerializationError,
)


class Reads:
    """Where read-only queries go: the replica (``[database] replica_dsn``) while it answers,
    else the primary. A replica that fails a query is left alone for ``retry_s`` and the query
    runs again on the primary, so a dead replica costs one failed attempt per ``retry_s``.
    A replica lags the primary by its replication delay: status and searches may be that old."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None = None,
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.retry_s = retry_s
        self._clock = clock
        self._down_until = 0.0

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool to read from now."""
        if self.replica is not None and self._clock() >= self._down_until:
            return self.replica
        return self.primary

    async def run(
        self,
        read: Callable[[asyncpg.Pool], Awaitable[T]],
        *,
        missing: Callable[[T], bool] | None = None,
    ) -> T:
        """``read(pool)`` on the replica, or on the primary when the replica is down.

        ``missing``: what the replica answers when it has not received a row yet (it lags by
        its replication delay); such an answer is asked of the primary again.
        """
        pool = self.pool
        if pool is self.primary:
            return await read(pool)
        try:
            got = await read(pool)
        except _GONE as exc:
            self._down_until = self._clock() + self.retry_s
            log.warning(
                "replica unusable; reading from the primary",
                extra={"error": redact(str(exc)), "retry_s": self.retry_s},
            )
            return await read(self.primary)
        if missing is not None and missing(got):
            return await read(self.primary)
        return got

    async def close(self) -> None:
        """Close the replica pool (the primary belongs to its owner)."""
        if self.replica is not None:
            await self.replica.close()


async def connect_reads(cfg: DatabaseConfig, primary: asyncpg.Pool) -> Reads:
    """The read router for ``cfg``: with a replica, its pool opens no connection until the
    first read, so a replica that is down does not stop the start."""
    if cfg.replica_dsn is None:
        return Reads(primary, retry_s=cfg.replica_retry_s)
    replica = await connect(cfg, min_size=0, dsn=cfg.replica_dsn)
    return Reads(primary, replica, retry_s=cfg.replica_retry_s)


def apart(tier: asyncpg.Pool | None, main: asyncpg.Pool) -> asyncpg.Pool | None:
    """``tier`` when it is another server's pool than ``main``, else None (the tier shares
    ``main``'s server and its transactions)."""
    return tier if tier is not None and tier is not main else None


class Tiers:
    """The pool of each tier's server. ``content`` and ``olap`` are the ``main`` pool itself
    unless ``[database.content]`` / ``[database.olap]`` name another server; code compares
    with ``is`` (:attr:`content_apart`, :attr:`olap_apart`) to keep one transaction when they
    share it."""

    def __init__(
        self,
        main: asyncpg.Pool,
        content: asyncpg.Pool | None = None,
        olap: asyncpg.Pool | None = None,
        *,
        olap_reads: Reads | None = None,
        content_reads: Reads | None = None,
    ) -> None:
        self.main = main
        self.content = main if content is None else content
        self.olap = main if olap is None else olap
        # Campaign statistics read the olap server's replica when it has one.
        self.olap_reads = olap_reads
        # Reads that may lag (a traced message's content, the quarantine listing) use the
        # content server's replica when it has one; sending never does (a body is read a
        # moment after it is written).
        self.content_reads = content_reads

    async def read_content(
        self,
        query: Callable[[asyncpg.Pool], Awaitable[T]],
        *,
        missing: Callable[[T], bool] | None = None,
    ) -> T:
        """``query(pool)`` on the content tier's replica while it answers (with the tier apart
        and ``[database.content] replica_dsn`` set), else on the content tier's server;
        ``missing`` as for :meth:`Reads.run`. ``query`` reads the content tier only: a failure
        of another server inside it would be taken for the replica's."""
        return await (self.content_reads or Reads(self.content)).run(query, missing=missing)

    @property
    def content_apart(self) -> bool:
        return self.content is not self.main

    @property
    def olap_apart(self) -> bool:
        return self.olap is not self.main

    async def close(self) -> None:
        """Close the pools of the other servers (``main`` belongs to its owner)."""
        for reads in (self.olap_reads, self.content_reads):
            if reads is not None:
                await reads.close()
        if self.content_apart:
            await self.content.close()
        if self.olap_apart and self.olap is not self.content:
            await self.olap.close()


async def connect_tiers(
    cfg: DatabaseConfig, main: asyncpg.Pool, *, min_size: int | None = None
) -> Tiers:
    """A pool per distinct server of ``cfg``'s tiers, ``main`` for the tiers on [database]'s.
    The content pool connects at once (sending needs it); an olap pool of its own opens no
    connection until first used, so that server being down does not stop the start (the olap
    outbox waits for it)."""
    content = olap = None
    if cfg.apart("content"):
        content = await connect(cfg.for_tier("content"), min_size=min_size)
    if cfg.apart("olap"):
        olap_cfg = cfg.for_tier("olap")
        if content is not None and olap_cfg.dsn == cfg.for_tier("content").dsn:
            olap = content
        else:
            olap = await connect(olap_cfg, min_size=0)
    olap_reads = content_reads = None
    if olap is not None and cfg.for_tier("olap").replica_dsn is not None:
        olap_reads = await connect_reads(cfg.for_tier("olap"), olap)
    if content is not None and cfg.for_tier("content").replica_dsn is not None:
        content_reads = await connect_reads(cfg.for_tier("content"), content)
    return Tiers(main, content, olap, olap_reads=olap_reads, content_reads=content_reads)


async def connect_one(dsn: str, timeout_s: float = 10.0) -> asyncpg.Connection:
    """A single connection (migrations, LISTEN), with the same error handling as :func:`connect`."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except asyncpg.ClientConfigurationError as exc:
        raise _bad_dsn(dsn, exc) from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise _unreachable(dsn, exc) from None
    await _init(conn)
    return conn


#: A connection from :func:`connect_one` or one acquired from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


@contextlib.asynccontextmanager
async def transaction(db: asyncpg.Pool | Conn) -> AsyncIterator[Conn]:
    """A transaction on ``db``: on a connection of the pool, or (a connection given, maybe
    already in a transaction such as a tenant-scoped one) on that connection, as a savepoint
    when nested."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


async def ping(pool: asyncpg.Pool | Conn) -> object:
    """One round trip to the server (the readiness probe's ``SELECT 1``)."""
    return await pool.fetchval("SELECT 1")
