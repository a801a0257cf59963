-- Issue 20 (lane pg): the feeder's push mark is a HOT update.
--
-- Every column an index names, in its key or its predicate, makes an update that changes it
-- write a new entry into every index of queue.jobs (eleven). pushed_at was named by two
-- (jobs_pushed, and jobs_due_priority_tenant's predicate), so marking a job pushed cost as much
-- as claiming it. Now no index names it: the due-job index covers every waiting job, pushed or
-- not (the feeder skips the pushed ones, a stream's worth at most, by a heap check), and the
-- repairs that looked pushed jobs up by push time read that index too (engine/store/feeding.py).
CREATE INDEX IF NOT EXISTS jobs_waiting_due ON queue.jobs (priority, tenant_id, next_attempt_at)
    WHERE state IN ('queued', 'deferred');
DROP INDEX IF EXISTS queue.jobs_due_priority_tenant;
DROP INDEX IF EXISTS queue.jobs_pushed;

-- A HOT update needs room for the new row version on the row's own page: pages are filled to
-- half at insert so every job of a page can be marked pushed in place (at 60% a third of the
-- marks found no room and were not HOT).
ALTER TABLE queue.jobs SET (fillfactor = 50);
