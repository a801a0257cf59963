"""Numbered SQL migrations (``engine/store/migrations/NNN_name.sql``) applied by ``engine migrate``.

Idempotent and safe to run from several hosts at once: a session advisory lock serialises
runners, and each file is applied in its own transaction together with its bookkeeping row.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import asyncpg
import msgspec

from engine.config import DatabaseConfig
from engine.errors import MigrationError, StoreError
from engine.redaction import redact
from engine.store.pool import connect_one

log = logging.getLogger("engine.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x70656E67  # "peng": one advisory lock id for every migration runner
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; refuses duplicate version numbers."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is not named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share version {version:03d}: {found[version].name}, {path.name}"
            )
        found[version] = Migration(version, path.stem, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    conn = await connect_one(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS engine;"
                "CREATE TABLE IF NOT EXISTS engine.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM engine.schema_migrations")
            }
            for mig in discover(directory):
                if mig.version in done:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(mig.sql)
                        await conn.execute(
                            "INSERT INTO engine.schema_migrations (version, name, checksum)"
                            " VALUES ($1, $2, $3)",
                            mig.version,
                            mig.name,
                            mig.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {mig.name} failed: {exc}",
                        hint="the database stays at the previous version; fix the SQL and rerun",
                    ) from None
                applied.append(mig.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def migrate_tiers(
    db: DatabaseConfig, directory: Path = MIGRATIONS_DIR, *, olap_may_wait: bool = False
) -> list[str]:
    """Apply every pending migration on each distinct server of ``db``'s tiers (the whole
    schema everywhere: a server's tables of tiers living elsewhere stay empty), then guard the
    main server's content tables when content lives apart (migration 141). Returns the names
    applied, ``name@host`` for a server other than [database]'s.

    ``olap_may_wait`` (the daemon's start): a server that holds only the olap tier and does not
    answer is skipped with a warning, so the engine starts and sends while it is down (the
    counts wait in the outbox; the next start migrates it). ``engine migrate`` fails instead."""
    applied: list[str] = []
    seen: dict[str, str] = {}
    olap_only = db.for_tier("olap").dsn if db.apart("olap") else None
    if olap_only is not None and db.apart("content") and db.for_tier("content").dsn == olap_only:
        olap_only = None
    for i, dsn in enumerate(db.servers):
        try:
            names = await migrate(dsn, directory)
        except StoreError as exc:
            if isinstance(exc, MigrationError) or not (olap_may_wait and dsn == olap_only):
                raise  # a failed migration always stops; only "not there" may wait
            log.warning(
                "olap server unreachable: not migrated; counts wait in the olap outbox",
                extra={"error": str(exc)},
            )
            continue
        applied += names if i == 0 else [f"{n}@{_host(dsn)}" for n in names]
        ident = await _database_id(dsn)
        if ident in seen:
            # The guard below would then refuse every content write on the tier's own server.
            raise MigrationError(
                f"{redact(dsn)} and {redact(seen[ident])} are the same database under two DSNs",
                hint="write [database]'s dsn for a tier on its server (or leave the tier unset)",
            )
        seen[ident] = dsn
    conn = await connect_one(db.dsn)
    try:
        await conn.execute("SELECT engine.set_content_apart($1)", db.apart("content"))
    finally:
        await conn.close()
    return applied


async def _database_id(dsn: str) -> str:
    """A random id the database keeps in ``engine.settings`` (made on first use), which tells
    two DSNs of one database apart from two databases."""
    conn = await connect_one(dsn)
    try:
        await conn.execute(
            "INSERT INTO engine.settings (key, value) VALUES ('database_id', gen_random_uuid())"
            " ON CONFLICT DO NOTHING"
        )
        ident: str = await conn.fetchval(
            "SELECT value FROM engine.settings WHERE key = 'database_id'"
        )
    finally:
        await conn.close()
    return ident


def _host(dsn: str) -> str:
    """The host part of a URL DSN (no credentials), to name a server in output."""
    rest = dsn.split("://", 1)[-1].split("/", 1)[0]
    return rest.rsplit("@", 1)[-1]
