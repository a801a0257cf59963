"""The asyncpg connection pool, with jsonb decoded by orjson and clear connection errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from engine.config import DatabaseConfig
from engine.errors import StoreError
from engine.redaction import redact


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
            await conn.execute(f'SET ROLE "{role}"')  # a validated identifier (config.py)

    return init


async def connect(cfg: DatabaseConfig, *, min_size: int | None = None) -> asyncpg.Pool:
    """Open the pool or raise :class:`StoreError` naming the server that did not answer."""
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            cfg.dsn,
            min_size=cfg.pool_min if min_size is None else min_size,
            max_size=cfg.pool_max,
            command_timeout=cfg.command_timeout_s,
            timeout=cfg.connect_timeout_s,
            statement_cache_size=cfg.statement_cache_size,
            init=_init_as(cfg.role),
            reset=_keep_session,
        )
    except asyncpg.ClientConfigurationError as exc:
        raise _bad_dsn(cfg.dsn, exc) from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise _unreachable(cfg.dsn, exc) from None
    return pool


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
