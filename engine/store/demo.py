"""What ``make demo`` (:mod:`engine.demo`) asks the database: a fresh database of its own, the
jobs per state while it runs, and the totals it prints at the end."""

from __future__ import annotations

import asyncpg

from engine.store.pool import Conn


async def recreate_database(conn: asyncpg.Connection, name: str) -> None:
    """Drop (forcing out any session) and create database ``name`` (a fixed, quoted name)."""
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')


async def jobs_per_state(conn: Conn | asyncpg.Pool) -> dict[str, int]:
    """How many jobs are in each state."""
    rows = await conn.fetch("SELECT state, count(*) n FROM queue.jobs GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def stored_contents(conn: Conn | asyncpg.Pool) -> int:
    """How many bodies are stored (content is deduplicated per tenant and SHA-256)."""
    value: int = await conn.fetchval("SELECT count(*) FROM content.email_content")
    return value


async def relayed_per_provider(conn: Conn | asyncpg.Pool) -> list[tuple[str, float]]:
    """(provider, messages relayed) from the OLAP counters, by provider."""
    rows = await conn.fetch(
        "SELECT provider, sum(relayed) r FROM olap.daily_stats GROUP BY provider ORDER BY 1"
    )
    return [(r["provider"], float(r["r"])) for r in rows]
