-- Event stream and webhooks (engine/events, docs/events.md).
--
-- Readers tail oltp.events in commit order, not id order: an identity value is taken at INSERT,
-- so a transaction holding id 100 may commit after the one holding id 101, and a plain "id >
-- cursor" reader would skip 100 for ever. Each row therefore records the writing transaction
-- (xid8); readers take rows ordered by (xid, id) and only below oltp.events_horizon(), the
-- oldest transaction of this database still in progress, so no row can appear behind a cursor.
CREATE SCHEMA IF NOT EXISTS oltp;

-- No table rewrite: rows written before this migration keep xid NULL and are never re-sent.
ALTER TABLE oltp.events ADD COLUMN IF NOT EXISTS xid xid8;
ALTER TABLE oltp.events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS events_tail ON oltp.events (xid, id) WHERE xid IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_tenant_tail ON oltp.events (tenant_id, xid, id)
    WHERE xid IS NOT NULL;

-- Everything below the returned xid is settled (committed or rolled back) in this database.
-- In-progress transactions of other databases (they share the xid counter) do not hold it back;
-- an in-progress xid whose backend cannot be seen (no pg_read_all_stats) conservatively does.
CREATE OR REPLACE FUNCTION oltp.events_horizon() RETURNS xid8
LANGUAGE sql STABLE AS $fn$
    SELECT coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
          WHERE NOT EXISTS (
              SELECT 1 FROM pg_stat_activity a
               WHERE a.datid IS NOT NULL
                 AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND a.backend_xid = ((x::text::numeric % 4294967296)::text)::xid)),
        pg_snapshot_xmax(pg_current_snapshot()))
$fn$;

-- Named reader positions that are not per tenant (the Redis stream publisher: 'stream').
CREATE TABLE IF NOT EXISTS oltp.event_cursors (
    name       text PRIMARY KEY,
    xid        xid8 NOT NULL,
    id         bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Existing history is not published: the stream starts with this migration.
INSERT INTO oltp.event_cursors (name, xid, id) VALUES ('stream', pg_current_xact_id(), 0)
    ON CONFLICT (name) DO NOTHING;

-- Per-tenant webhook endpoints; the delivery position and retry state live on the row, so a
-- restarted engine resumes where it stopped.
CREATE TABLE IF NOT EXISTS oltp.webhook_endpoints (
    tenant_id       text NOT NULL REFERENCES oltp.tenants ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    url             text NOT NULL,
    secret          text NOT NULL,                -- HMAC key; never logged, never listed
    kinds           text[] NOT NULL DEFAULT '{}', -- empty: every kind
    active          boolean NOT NULL DEFAULT true,
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    cursor_xid      xid8 NOT NULL DEFAULT pg_current_xact_id(), -- last event delivered (or
    cursor_id       bigint NOT NULL DEFAULT 0,                  -- dead-lettered); starts "now"
    attempts        integer NOT NULL DEFAULT 0,   -- failed attempts of the current batch
    failing_since   timestamptz,
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    last_success_at timestamptz,
    delivered       bigint NOT NULL DEFAULT 0,    -- events delivered so far
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS webhook_endpoints_id ON oltp.webhook_endpoints (id);

-- Batches given up on after [events] webhook_max_age_s of failures: event ids only (the events
-- stay in oltp.events), so an erased address is not copied here.
CREATE TABLE IF NOT EXISTS oltp.webhook_dead_letters (
    tenant_id     text NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    endpoint_id   bigint NOT NULL,
    event_ids     bigint[] NOT NULL,
    attempts      integer NOT NULL,
    failing_since timestamptz,
    last_status   integer,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES oltp.webhook_endpoints (tenant_id, id)
        ON DELETE CASCADE
);

DO $rls$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['oltp.webhook_endpoints', 'oltp.webhook_dead_letters']
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        IF NOT EXISTS (SELECT 1 FROM pg_policies
                       WHERE schemaname || '.' || tablename = t AND policyname = 'tenant_isolation')
        THEN
            EXECUTE format('CREATE POLICY tenant_isolation ON %s USING '
                           '(tenant_id = current_setting(''engine.tenant_id'', true))', t);
        END IF;
    END LOOP;
END
$rls$;
-- Tenants may read their endpoints' delivery state, but never the signing secret.
GRANT SELECT (tenant_id, id, url, kinds, active, description, created_at, attempts,
              failing_since, next_attempt_at, last_status, last_error, last_success_at, delivered)
    ON oltp.webhook_endpoints TO engine_tenant;
GRANT SELECT ON oltp.webhook_dead_letters TO engine_tenant;
