-- Plans of the hot queue statements must not depend on fresh statistics. queue.jobs grows from
-- nothing to millions of rows within minutes (a campaign) while autovacuum analyses it about
-- once a minute at best; with stale statistics the planner took `id = ANY($1)` for 64% of the
-- table and seq-scanned it on every claim. A UNIQUE index on id (ids come from an identity
-- column, so they are unique anyway) tells the planner "one row per id" without statistics.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_id_unique ON queue.jobs (id);
DROP INDEX IF EXISTS queue.jobs_id;

-- The lease index is for the reconciler (expired leases, dead owners). With the predicate
-- "state = 'sending'" alone the outcome update (which checks state = 'sending') combined it into
-- a bitmap scan that read every entry of it, dead ones included, for each batch; requiring
-- lease_until IS NOT NULL (true whenever state = 'sending') keeps it to the queries that name
-- lease_until.
DROP INDEX IF EXISTS queue.jobs_leased;
CREATE INDEX IF NOT EXISTS jobs_leased_until ON queue.jobs (lease_until)
    WHERE state = 'sending' AND lease_until IS NOT NULL;

-- A queue table churns (every job is inserted and updated three times): vacuum and analyse it
-- far more often than the 20%/10% defaults so dead rows and statistics do not drift.
ALTER TABLE queue.jobs SET (autovacuum_vacuum_scale_factor = 0.02,
                            autovacuum_analyze_scale_factor = 0.02,
                            autovacuum_vacuum_cost_delay = 1);
ALTER TABLE oltp.events SET (autovacuum_vacuum_scale_factor = 0.05,
                             autovacuum_analyze_scale_factor = 0.02);
