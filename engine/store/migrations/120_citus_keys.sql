-- Citus/NileDB-ready keys (issue 22, docs/scaling.md): tenant_id is the distribution column, so
-- every primary key, unique key and foreign key of a tenant table includes it; the few tables
-- without a tenant are reference tables (engine/store/tiers.py lists them). Every step keeps the
-- rows it finds. tests/integration/test_citus_keys.py checks the result for every table.

-- queue.jobs: the hot statements (claim, outcomes) find a job by (tenant_id, id) through
-- jobs_pkey, which tells the planner "one row per key" without statistics as the unique index
-- on id alone did. Lookups that know only the id (a VERP bounce, the admin API) keep a plain
-- index on it.
CREATE INDEX IF NOT EXISTS jobs_id ON queue.jobs (id);
DROP INDEX IF EXISTS queue.jobs_id_unique;

-- oltp.webhook_endpoints: the same for its id (the admin API looks an endpoint up by id).
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_id ON oltp.webhook_endpoints (id);
DROP INDEX IF EXISTS oltp.webhook_endpoints_id;

-- content.inbound_messages: a message arrives before it is mapped to a tenant; until then it
-- belongs to the intake pseudo-tenant '' (invisible to every tenant, as NULL was).
UPDATE content.inbound_messages SET tenant_id = '' WHERE tenant_id IS NULL;
ALTER TABLE content.inbound_messages
    ALTER COLUMN tenant_id SET DEFAULT '',
    ALTER COLUMN tenant_id SET NOT NULL;
CREATE INDEX IF NOT EXISTS inbound_messages_id ON content.inbound_messages (id);
ALTER TABLE content.inbound_messages DROP CONSTRAINT IF EXISTS inbound_messages_pkey;
ALTER TABLE content.inbound_messages ADD CONSTRAINT inbound_messages_pkey
    PRIMARY KEY (tenant_id, id);

-- oltp.inbound_counted: keyed by the job's tenant too. A row whose job is gone (retention) can
-- never match a report again, so it has no tenant to take and is dropped.
ALTER TABLE oltp.inbound_counted ADD COLUMN IF NOT EXISTS tenant_id text;
UPDATE oltp.inbound_counted c SET tenant_id = j.tenant_id
  FROM queue.jobs j WHERE j.id = c.job_id AND c.tenant_id IS NULL;
DELETE FROM oltp.inbound_counted WHERE tenant_id IS NULL;
ALTER TABLE oltp.inbound_counted ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE oltp.inbound_counted DROP CONSTRAINT IF EXISTS inbound_counted_pkey;
ALTER TABLE oltp.inbound_counted ADD CONSTRAINT inbound_counted_pkey
    PRIMARY KEY (tenant_id, job_id, class);

-- queue.enqueue_tally: one row per tenant of an inserting statement, so the row lands on the
-- shard of the jobs it counts (a local write under Citus). Rows left from before count under ''.
ALTER TABLE queue.enqueue_tally ADD COLUMN IF NOT EXISTS tenant_id text NOT NULL DEFAULT '';
ALTER TABLE queue.enqueue_tally ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE queue.enqueue_tally DROP CONSTRAINT IF EXISTS enqueue_tally_pkey;
ALTER TABLE queue.enqueue_tally ADD CONSTRAINT enqueue_tally_pkey PRIMARY KEY (tenant_id, id);

-- SECURITY DEFINER: the tally row is the engine's bookkeeping, written whatever role enqueues
-- (the table is a tenant table now, under the tenant policies).
CREATE OR REPLACE FUNCTION queue.tally_enqueued() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO queue.enqueue_tally (tenant_id, jobs)
        SELECT i.tenant_id, count(*) FROM inserted i GROUP BY i.tenant_id;
    RETURN NULL;
END
$$;

-- A domain is verified for one tenant at most: a partial unique index on domain alone cannot be
-- distributed, so the verified domains are also kept in a reference table keyed by domain,
-- maintained by a trigger. Verifying a domain another tenant verified still fails with a
-- unique violation, now raised by the trigger's insert.
CREATE TABLE IF NOT EXISTS oltp.verified_domains (
    domain    text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES oltp.tenants ON DELETE CASCADE
);
INSERT INTO oltp.verified_domains (domain, tenant_id)
    SELECT domain, tenant_id FROM oltp.sending_domains WHERE verified_at IS NOT NULL
    ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION oltp.sync_verified_domain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.verified_at IS NOT NULL THEN
        DELETE FROM oltp.verified_domains WHERE domain = OLD.domain AND tenant_id = OLD.tenant_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.verified_at IS NOT NULL THEN
        INSERT INTO oltp.verified_domains (domain, tenant_id) VALUES (NEW.domain, NEW.tenant_id);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sending_domains_verified ON oltp.sending_domains;
CREATE TRIGGER sending_domains_verified
    AFTER INSERT OR UPDATE OF verified_at, domain, tenant_id OR DELETE ON oltp.sending_domains
    FOR EACH ROW EXECUTE FUNCTION oltp.sync_verified_domain();
DROP INDEX IF EXISTS oltp.sending_domains_one_owner;
-- The cross-tenant lookups by domain (overlap checks, owners) keep an index.
CREATE INDEX IF NOT EXISTS sending_domains_verified_domain ON oltp.sending_domains (domain)
    WHERE verified_at IS NOT NULL;

SELECT engine.grant_roles();
