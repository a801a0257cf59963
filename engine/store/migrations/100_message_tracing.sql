-- Issue 21: trace one message, act on many (engine/messages, `engine messages ...`,
-- docs/operations.md "Message tracing and bulk actions").
--
-- Migrations run inside a transaction (engine/store/migrate.py), where CREATE INDEX
-- CONCURRENTLY is refused; these are plain CREATE INDEX IF NOT EXISTS and lock writes to the
-- table while they build. On a large queue.jobs / oltp.events run the same statements with
-- CONCURRENTLY by hand first (they are then skipped here): docs/operations.md says how.

-- A hold keeps a waiting job from being claimed until released. It is a flag, not a state
-- (the job states are a contract): held_at is when it was held; while held, next_attempt_at
-- is far in the future, so no due-job scan (feeder, claim, oldest-age) ever reaches it.
-- cancel_requested_at marks a job that was in flight when a bulk cancel ran: its attempt
-- finishes, and unless the relay took it, it ends cancelled instead of being retried.
ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS held_at timestamptz;
ALTER TABLE queue.jobs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;

-- The timeline of one job (`engine messages show`): events by job id.
CREATE INDEX IF NOT EXISTS events_job ON oltp.events (job_id, id) WHERE job_id IS NOT NULL;

-- Search and bulk actions by campaign and by sender, newest first (keyset on id). Tenant and
-- recipient searches have the primary key and jobs_recipient; a time range is turned into an
-- id range by bisection on the primary key (engine/store/messages.py), so created_at needs no
-- index of its own. Bulk actions by tenant or recipient domain read jobs_waiting below.
CREATE INDEX IF NOT EXISTS jobs_campaign ON queue.jobs (campaign_id, id)
    WHERE campaign_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_sender ON queue.jobs (sender, id);

-- The backlog (engine_backlog_jobs, `engine status`, /v1/queues): waiting jobs only, counted
-- by an index-only scan that never touches a finished job.
CREATE INDEX IF NOT EXISTS jobs_waiting ON queue.jobs (priority, state, held_at)
    WHERE state IN ('queued', 'deferred');
