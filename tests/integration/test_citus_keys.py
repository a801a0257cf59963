"""Every table is ready to be distributed by tenant (Citus, NileDB: docs/scaling.md).

Read from pg_catalog after all migrations, so a table any later migration adds is held to the
same rules: a tenant table has ``tenant_id NOT NULL`` and every primary key, unique key (unique
indexes too) and foreign key includes it; everything else is listed as a reference table in
engine/store/tiers.py. And the keys migration keeps the rows of an existing database.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from engine.store.migrate import MIGRATIONS_DIR, migrate
from engine.store.tiers import DISTRIBUTION_COLUMN, REFERENCE_TABLES

KEYS_MIGRATION = 120

_TABLES = """
SELECT c.oid, n.nspname || '.' || c.relname AS name,
       (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $1
           AND NOT a.attisdropped) AS tenant_att,
       (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $1
           AND NOT a.attisdropped) AS tenant_not_null
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
 ORDER BY 2
"""

# Unique indexes cover primary keys and unique constraints too (each has one).
_UNIQUE = """
SELECT x.indrelid AS rel, i.relname AS name, x.indkey::int2[] AS cols
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
 WHERE x.indisunique AND x.indrelid = ANY($1::oid[])
"""

_FOREIGN = """
SELECT k.conrelid AS rel, k.conname AS name, k.conkey AS cols, k.confkey AS fcols,
       k.confrelid AS frel, fn.nspname || '.' || f.relname AS fname,
       (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = k.confrelid AND a.attname = $2)
           AS ftenant_att
  FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid
  JOIN pg_namespace fn ON fn.oid = f.relnamespace
 WHERE k.contype = 'f' AND k.conrelid = ANY($1::oid[])
"""


async def _violations(conn: asyncpg.Connection) -> list[str]:
    tables = await conn.fetch(_TABLES, DISTRIBUTION_COLUMN)
    by_oid = {t["oid"]: t for t in tables}
    names = {t["name"] for t in tables}
    bad = [f"{r}: listed as a reference table but does not exist" for r in REFERENCE_TABLES]
    bad = [b for r, b in zip(REFERENCE_TABLES, bad, strict=True) if r not in names]
    has_pk = {
        r["conrelid"]
        for r in await conn.fetch("SELECT conrelid FROM pg_constraint WHERE contype = 'p'")
    }
    for t in tables:
        if t["name"] in REFERENCE_TABLES:
            continue
        if t["tenant_att"] is None:
            bad.append(f"{t['name']}: no tenant_id column and not a reference table")
        elif not t["tenant_not_null"]:
            bad.append(f"{t['name']}: tenant_id may be NULL")
        if t["oid"] not in has_pk:
            bad.append(f"{t['name']}: no primary key")
    oids = list(by_oid)
    for ix in await conn.fetch(_UNIQUE, oids):
        t = by_oid[ix["rel"]]
        if t["name"] not in REFERENCE_TABLES and t["tenant_att"] not in ix["cols"]:
            bad.append(f"{t['name']}: unique index {ix['name']} does not include tenant_id")
    for fk in await conn.fetch(_FOREIGN, oids, DISTRIBUTION_COLUMN):
        bad += _foreign_key_violations(by_oid[fk["rel"]], fk)
    return bad


def _foreign_key_violations(t: asyncpg.Record, fk: asyncpg.Record) -> list[str]:
    """A reference table may point at reference tables only; a tenant table's foreign key
    includes tenant_id and maps it to the target's tenant_id (unless the target is a reference
    table)."""
    to_reference = fk["fname"] in REFERENCE_TABLES
    if t["name"] in REFERENCE_TABLES:
        if to_reference:
            return []
        return [f"{t['name']}: reference table with a foreign key {fk['name']} to {fk['fname']}"]
    pairs = dict(zip(fk["cols"], fk["fcols"], strict=True))
    if t["tenant_att"] not in pairs:
        return [f"{t['name']}: foreign key {fk['name']} does not include tenant_id"]
    if not to_reference and pairs[t["tenant_att"]] != fk["ftenant_att"]:
        return [f"{t['name']}: foreign key {fk['name']} does not map tenant_id to its tenant_id"]
    return []


async def test_every_table_is_distributable_by_tenant(pg_dsn: str) -> None:
    """After every migration: no key or foreign key would stop distributing by tenant_id."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        bad = await _violations(conn)
    finally:
        await conn.close()
    assert bad == [], "\n".join(bad)


async def test_catalog_check_catches_an_offender(pg_dsn: str) -> None:
    """The check is not vacuous: a tenant table keyed on id alone is reported."""
    conn = await asyncpg.connect(pg_dsn)
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(
            "CREATE TABLE oltp.citus_probe (id bigint PRIMARY KEY, tenant_id text,"
            " email text UNIQUE, job bigint REFERENCES oltp.citus_probe (id))"
        )
        bad = await _violations(conn)
    finally:
        await tr.rollback()
        await conn.close()
    assert sorted(bad) == [
        "oltp.citus_probe: foreign key citus_probe_job_fkey does not include tenant_id",
        "oltp.citus_probe: tenant_id may be NULL",
        "oltp.citus_probe: unique index citus_probe_email_key does not include tenant_id",
        "oltp.citus_probe: unique index citus_probe_pkey does not include tenant_id",
    ]


@pytest.fixture
async def fresh_dsn(pg_dsn: str) -> AsyncIterator[str]:
    """An empty database of its own (the migration test starts from older migrations)."""
    name = f"citus_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield pg_dsn.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_keys_migration_keeps_existing_rows(fresh_dsn: str, tmp_path: Path) -> None:
    """A database migrated before the keys change, with data, migrates on and keeps its rows."""
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(f.name[:3]) < KEYS_MIGRATION:
            shutil.copy(f, tmp_path / f.name)
    await migrate(fresh_dsn, tmp_path)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute(
            """
            INSERT INTO oltp.tenants (tenant_id) VALUES ('t1'), ('t2');
            INSERT INTO queue.jobs (tenant_id, idempotency_key, sender, recipient,
                                    content_sha256, expires_at)
                 VALUES ('t1', 'a', 's@d.example', 'r@x.example', '\\x00', now() + interval '1d'),
                        ('t2', 'b', 's@e.example', 'r@y.example', '\\x00', now() + interval '1d');
            INSERT INTO content.inbound_messages (size, raw) VALUES (1, '\\x00');
            INSERT INTO content.inbound_messages (tenant_id, size, raw) VALUES ('t1', 1, '\\x00');
            INSERT INTO oltp.sending_domains (tenant_id, domain, token, verified_at)
                 VALUES ('t1', 'd.example', 'x', now()), ('t2', 'e.example', 'y', NULL);
            """
        )
        job = await conn.fetchval("SELECT id FROM queue.jobs WHERE tenant_id = 't2'")
        await conn.execute(
            "INSERT INTO oltp.inbound_counted (job_id, class) VALUES ($1, 'hard'), (-1, 'soft')",
            job,
        )
    finally:
        await conn.close()

    applied = await migrate(fresh_dsn)
    assert applied[0].startswith(f"{KEYS_MIGRATION}_"), applied

    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM queue.jobs") == 2
        # The enqueue above counted under its tenant; rows from before count under ''.
        assert await conn.fetchval("SELECT sum(jobs) FROM queue.enqueue_tally") == 2
        inbound = await conn.fetch("SELECT tenant_id FROM content.inbound_messages ORDER BY id")
        assert [r["tenant_id"] for r in inbound] == ["", "t1"]
        counted = await conn.fetch("SELECT tenant_id, job_id, class FROM oltp.inbound_counted")
        assert [tuple(r) for r in counted] == [("t2", job, "hard")]  # (-1: its job is gone)
        assert await conn.fetch("SELECT domain, tenant_id FROM oltp.verified_domains") == [
            ("d.example", "t1")
        ]
        # Verifying a domain verified by another tenant still fails.
        await conn.execute(
            "INSERT INTO oltp.sending_domains (tenant_id, domain, token)"
            " VALUES ('t2', 'd.example', 'z')"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "UPDATE oltp.sending_domains SET verified_at = now()"
                " WHERE tenant_id = 't2' AND domain = 'd.example'"
            )
        # New enqueues count per tenant.
        await conn.execute(
            "INSERT INTO queue.jobs (tenant_id, idempotency_key, sender, recipient,"
            " content_sha256, expires_at) VALUES ('t2', 'c', 's@e.example', 'r@z.example',"
            " '\\x00', now() + interval '1d')"
        )
        assert (
            await conn.fetchval("SELECT jobs FROM queue.enqueue_tally WHERE tenant_id = 't2'") == 1
        )
        assert await _violations(conn) == []
    finally:
        await conn.close()
