-- jobs_due (priority, due time) let the planner answer the feeder's per-tenant lookup by
-- reading every due job of a priority and filtering on the tenant: with statistics minutes old
-- after a campaign both it and jobs_due_priority_tenant looked like "one row", and it chose
-- jobs_due (2,522 rows read per tenant, 119 ms a feed round, in the 1,000-tenant bench). Its
-- other users (the oldest-due-job age, the next due time) now take the earliest due job of
-- each waiting tenant from jobs_due_priority_tenant. One index fewer to write at every enqueue
-- and deferral.
DROP INDEX IF EXISTS queue.jobs_due;
