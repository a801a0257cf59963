-- The fair feeder walked every tenant of oltp.tenants, for each priority, on every round: with
-- 10,000 tenants of which 101 had mail waiting, one round took ~500 ms of PostgreSQL (40 ms
-- with only the 101). It now finds the tenants that have unpushed jobs of a priority by a skip
-- scan (one index probe per such tenant), which needs the priority first in the index; the
-- per-tenant lookup (priority, tenant, due time) uses the same index. It covers only the
-- unpushed backlog, so it is small next to queue.jobs.
CREATE INDEX IF NOT EXISTS jobs_due_priority_tenant
    ON queue.jobs (priority, tenant_id, next_attempt_at)
    WHERE state IN ('queued', 'deferred') AND pushed_at IS NULL;
DROP INDEX IF EXISTS queue.jobs_due_tenant;
