"""How the tables of the storage tiers distribute (Citus, NileDB: docs/scaling.md).

Every table of the engine's schemas is one of two kinds:

* a **tenant table**: it has a ``tenant_id NOT NULL`` column, the distribution column, and every
  primary key, unique key and foreign key of it includes ``tenant_id`` (a foreign key may also
  point at a reference table). Under Citus it is ``create_distributed_table(t, 'tenant_id',
  colocate_with => 'queue.jobs')``: a tenant's rows of every table live on one node, so
  every statement and transaction that names one tenant stays on that node.
* a **reference table**, listed in :data:`REFERENCE_TABLES`: small, engine-wide, read far more
  than written; replicated to every node (``create_reference_table``), so any shard can join it.

``tests/integration/test_citus_keys.py`` reads pg_catalog after the migrations and holds every
table (including those later migrations add) to these rules.
"""

from __future__ import annotations

__all__ = ["DISTRIBUTION_COLUMN", "REFERENCE_TABLES"]

#: The distribution column of every tenant table.
DISTRIBUTION_COLUMN = "tenant_id"

#: Tables that are not distributed by tenant, and why. Under Citus each is a reference table
#: (``create_reference_table``), replicated to every node.
REFERENCE_TABLES: dict[str, str] = {
    "oltp.tenants": "the tenant directory; every tenant table's foreign key points at it",
    "oltp.api_keys": "keys are found by their prefix before the tenant is known",
    "oltp.verified_domains": "a domain is verified for one tenant at most, across tenants",
    "oltp.event_cursors": "the engine's reader positions over the event log",
    "engine.settings": "engine-wide settings the SQL enqueue path reads",
    "engine.secrets": "engine-wide secrets (owner only)",
    "engine.platform_tenants": "which tenants a platform role may act for (row security)",
    "engine.schema_migrations": "which migrations ran",
}
