-- Committed enqueues, counted where they commit: every INSERT into queue.jobs (the Python
-- enqueue, SQL engine.enqueue(jsonb), the client, the admin API) adds one row with its row
-- count, in the inserting transaction, so a rolled-back enqueue counts nothing and an
-- idempotent replay (ON CONFLICT, no row inserted) counts nothing. Appending a row (not
-- updating one counter row) keeps concurrent enqueues from queueing on a row lock. The daemons
-- drain the table every few seconds (engine/queue/tally.py): each row is deleted by exactly one
-- instance, which adds it to its engine_jobs_enqueued_total, so the sum over instances is the
-- number of jobs committed.
CREATE TABLE IF NOT EXISTS queue.enqueue_tally (
    id bigserial PRIMARY KEY,
    jobs bigint NOT NULL
);

CREATE OR REPLACE FUNCTION queue.tally_enqueued() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM inserted;
    IF n > 0 THEN
        INSERT INTO queue.enqueue_tally (jobs) VALUES (n);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS jobs_tally_enqueued ON queue.jobs;
CREATE TRIGGER jobs_tally_enqueued AFTER INSERT ON queue.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION queue.tally_enqueued();
