-- Issue 15: a bounce or complaint counts once per job and class (complaint | hard | soft).
-- A replayed or duplicated report finds its row here and changes nothing (no second
-- suppression count, stats row or shaping signal). Keyed by job: a job has one recipient, so
-- no address is stored (nothing for GDPR erasure to chase).
CREATE TABLE IF NOT EXISTS oltp.inbound_counted (
    job_id      bigint NOT NULL,
    class       text NOT NULL CHECK (class IN ('complaint', 'hard', 'soft')),
    inbound_id  bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, class)
);
CREATE INDEX IF NOT EXISTS inbound_counted_created ON oltp.inbound_counted (created_at);
