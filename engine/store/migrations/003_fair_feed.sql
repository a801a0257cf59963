-- Fair feeding: the feeder takes due jobs tenant by tenant (round robin), so one tenant's
-- million-job campaign cannot fill the Redis stream ahead of another tenant's password reset.
CREATE INDEX IF NOT EXISTS jobs_due_tenant ON queue.jobs (tenant_id, priority, next_attempt_at)
    WHERE state IN ('queued', 'deferred') AND pushed_at IS NULL;
